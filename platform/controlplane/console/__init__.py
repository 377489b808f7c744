"""The web console: static pages served at /console/ that call the REST API in the browser."""
