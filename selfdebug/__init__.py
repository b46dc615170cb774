"""selfdebug: an open implementation of LeDex (Jiang et al., NeurIPS 2024)."""
