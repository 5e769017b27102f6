"""Distributed faiss top-k retrieval."""
