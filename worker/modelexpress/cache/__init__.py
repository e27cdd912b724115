"""Model downloads and the local model cache: Hugging Face (and, by URI scheme, NGC and object stores),
integrity checks, progress, quota, and a SQLite record of what is cached with LRU eviction."""
