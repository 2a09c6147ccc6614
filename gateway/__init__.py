"""HTTP gateway: configuration, web application and command-line entry point."""
