"""Picture and file IO at the edge: atomic writes, HDR and SDR stills."""
