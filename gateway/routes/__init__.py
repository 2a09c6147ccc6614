"""HTTP route handlers, grouped by concern; each stays thin and delegates."""
