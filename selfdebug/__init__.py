"""selfdebug: an open implementation of LeDex (Jiang et al., NeurIPS 2024)."""

import os

# OpenMP threads that spin while waiting make torch 7-10x slower when the sandbox workers hold a
# core (measured on 2 cores); PASSIVE makes them sleep. Only effective before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
