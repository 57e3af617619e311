"""Transparency proofs: the RFC 6962 Merkle tree and signed checkpoints (tlog notes)."""
