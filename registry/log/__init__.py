"""The replicated log: signed messages, the community's clock, the state apply builds, and the Raft transport."""
