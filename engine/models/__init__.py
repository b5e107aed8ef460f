"""Model architectures as plain torch modules calling the ops of ``engine.kernels``."""
