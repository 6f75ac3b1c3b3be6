"""The HTTP application: it mounts the API surfaces, serves the plain-HTTP pages, and runs the CLI.

Its plumbing (request bodies, who is asking over HTTP, telemetry, settings) is what every surface shares.
"""
