"""Real-time HDR10 playback through mpv: the mpv session (options, events, keys) and the
producer thread that filters frames into mpv's pipe."""
