"""Storage at the bottom of the harness: run directories and their files (``rundir``), atomic
writes (``atomic``) and the per-run lock (``lock``). It knows nothing of training or evaluation."""
