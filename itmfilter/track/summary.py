"""What a video's weight track holds, for ``itmfilter info VIDEO``: the header (network
config, HDR10 metadata, binding), where it is carried, its packets by kind, its rate in
kbit/s, and the packets that are damaged or missing."""

from __future__ import annotations

import os
from collections import Counter
from fractions import Fraction
from pathlib import Path

from itmfilter.media.video import probe_video
from itmfilter.track.carriage import load_track
from itmfilter.track.codec import covered_frames
from itmfilter.track.format import TrackFormatError, decode_packet, param_count

LISTED = 10
"""At most this many frame numbers are listed for damaged or missing packets."""


def summarise_track(video: str | os.PathLike) -> dict:
    """A JSON-ready description of ``video`` and the weight track it carries.

    Keys: ``path``; ``video`` (container, codec, width, height, fps, frames, duration_s);
    ``carriage`` (where the track was found, ``None`` when the file carries none: blind
    mode) and, with a track, ``header`` (format version, ``model_config`` and its
    ``parameters``, fps, frame_count, width, height, ``hdr10`` in cd/m2 and CIE xy,
    ``sdr``, ``binding``, ``encoder``, ``quantiser``) and ``packets``: ``count``,
    ``by_kind`` (key/delta/repeat), ``shots``, ``bytes`` (packets + header),
    ``header_bytes``, ``bytes_per_frame``, ``kbit_per_s`` (over the track's duration,
    frame_count / fps), ``damaged`` and ``missing`` (counts, and up to :data:`LISTED`
    frame numbers in ``damaged_frames`` / ``missing_frames``).

    Raises :class:`~itmfilter.errors.ItmError` for an unreadable video, a damaged track
    header or a track made for another video (binding mismatch).
    """
    path = Path(video)
    info = probe_video(path)
    out: dict = {
        "path": str(path),
        "video": {"container": info.container, "codec": info.codec, "width": info.width, "height": info.height,
                  "fps": _rate(info.fps), "frames": info.frame_count, "duration_s": round(info.duration_s, 3),
                  "transfer": info.transfer},
        "carriage": None,
    }
    track = load_track(path)
    if track is None:
        return out
    header = track.header
    doc = header.to_json_dict()
    out["carriage"] = track.where
    out["header"] = {
        "format": doc["format"], "version": ".".join(str(v) for v in header.version),
        "model_config": doc["model_config"], "parameters": param_count(header.config),
        "fps": _rate(Fraction(*header.fps)), "frame_count": header.frame_count,
        "width": header.width, "height": header.height, "hdr10": header.hdr10, "sdr": doc["sdr"],
        "binding": doc["binding"], "encoder": doc["encoder"], "quantiser": doc["quantiser"],
    }
    kinds: Counter = Counter()
    shots: set[int] = set()
    damaged: list[int] = []
    packet_bytes = 0
    for frame, data in sorted(track.packets.items()):
        packet_bytes += len(data)
        try:
            packet = decode_packet(data)
        except TrackFormatError:
            damaged.append(frame)
            continue
        kinds[packet.kind] += 1
        shots.add(packet.shot)
    frames = header.frame_count or (max(track.packets) + 1 if track.packets else 0)
    covered = covered_frames(track.packets)  # frames a shift run carries (DELTA coding 5): not missing
    missing = [f for f in range(frames) if f not in track.packets and f not in covered]
    header_bytes = len(header.to_bytes())
    total = packet_bytes + header_bytes
    seconds = frames * header.fps[1] / header.fps[0] if frames else 0.0
    out["packets"] = {
        "count": len(track.packets),
        "by_kind": {kind: kinds.get(kind, 0) for kind in ("key", "delta", "repeat")},
        "shots": len(shots),
        "bytes": total,
        "header_bytes": header_bytes,
        "bytes_per_frame": round(total / frames, 1) if frames else 0.0,
        "kbit_per_s": round(total * 8 / seconds / 1000, 2) if seconds else 0.0,
        "damaged": len(damaged),
        "damaged_frames": damaged[:LISTED],
        "missing": len(missing),
        "missing_frames": missing[:LISTED],
    }
    return out


def _rate(fps: Fraction) -> float:
    return round(float(fps), 4)


def format_summary(doc: dict) -> str:
    """:func:`summarise_track`'s result as lines of text for a terminal."""
    v = doc["video"]
    lines = [f"{doc['path']}: {v['codec']} {v['width']}x{v['height']} {v['fps']:g} fps, {v['frames']} frames "
             f"({v['duration_s']:g} s, {v['container']})"]
    if doc["carriage"] is None:
        lines.append("weights: none (plays blind: the shipped initialisation alone)")
        return "\n".join(lines)
    h, p = doc["header"], doc["packets"]
    cfg = h["model_config"]
    lines.append(f"weights: {doc['carriage']}, track format {h['format']} {h['version']}")
    lines.append(f"network: {h['parameters']} parameters, prior {cfg.get('prior')}, "
                 + ", ".join(f"{k} {cfg[k]}" for k in sorted(cfg) if k != "prior"))
    hdr10 = h["hdr10"]
    if hdr10:
        lines.append(f"HDR10: mastering {hdr10.get('max_luminance')} / {hdr10.get('min_luminance')} cd/m2, "
                     f"MaxCLL {hdr10.get('max_cll')} cd/m2, MaxFALL {hdr10.get('max_fall')} cd/m2, "
                     f"primaries {hdr10.get('primaries')}, white {hdr10.get('white_point')}")
    else:
        lines.append("HDR10: not in the header (transcode computes MaxCLL/MaxFALL over the reconstruction)")
    kinds = ", ".join(f"{n} {k}" for k, n in p["by_kind"].items())
    lines.append(f"packets: {p['count']} for {h['frame_count']} frames ({kinds}), {p['shots']} shots")
    lines.append(f"rate: {p['bytes']} bytes = {p['kbit_per_s']} kbit/s, {p['bytes_per_frame']} bytes a frame "
                 f"(header {p['header_bytes']})")
    problems = f"damaged packets: {p['damaged']}"
    if p["damaged"]:
        problems += f" (frames {', '.join(map(str, p['damaged_frames']))}{' ...' if p['damaged'] > LISTED else ''})"
    problems += f"; missing: {p['missing']}"
    if p["missing"]:
        problems += f" (frames {', '.join(map(str, p['missing_frames']))}{' ...' if p['missing'] > LISTED else ''})"
    lines.append(problems)
    return "\n".join(lines)


__all__ = ["LISTED", "format_summary", "summarise_track"]
