"""Staging of job input and output data to and from object storage."""
