"""Serving stage: the reward model behind Ray Serve (``config`` -> ``app.build_app`` -> ``ray_compat.serve_run``)."""
