"""The judge process (`python -m registry.judge.process`): the only place the node reaches `schemes`."""
