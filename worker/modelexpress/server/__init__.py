"""The ModelExpress gRPC server (the seeds' component on port 8001): health, JSON actions, model service."""
