"""Ray Serve application for ray-logmilp (serve/app.py, serve/config.yaml)."""
