-- itmfilter.lua: play SDR video that carries itmfilter weights as HDR10, in your own mpv.
--
--     mpv --script=players/itmfilter.lua sdr.mp4
--     (or copy it into ~/.config/mpv/scripts/)
--
-- Each file mpv loads is probed with `itmfilter info --json`. A file that carries weights
-- is played from a named pipe that `itmfilter transcode FILE -o FIFO --format nut` fills
-- with the reconstructed HDR10 frames (10-bit 4:2:0, PQ, BT.2020) and the file's audio;
-- a `format` video filter tags them HDR10 (NUT has no colour tags), appended to your own
-- `vf` chain for that file only. Files without weights play untouched.
--
-- Seeking: a pipe cannot seek, so a seek restarts the pipe at the target (`--start`) and
-- mpv reloads the same playlist entry there: your keys, input.conf, playlist and options
-- keep working. mpv's own --start is passed on the same way. Timestamps are the file's
-- (rebase-start-time=no for the piped file), so the clock shows the true position.
--
-- Options (--script-opts=itmfilter-KEY=VALUE, or script-opts/itmfilter.conf):
--   command    how to run itmfilter, words split on spaces (default "itmfilter";
--              e.g. "/path/.venv/bin/python -m itmfilter.cli")
--   rung       quality ladder: auto (best that keeps up with the frame rate), full,
--              half, quarter, eighth, sixteenth (default auto)
--   device     auto, cpu or cuda (default auto)
--   precision  auto, fp32 or bf16 (default auto)
--
-- Needs a Unix system (a named pipe made with mkfifo). The filter runs on the CPU or GPU
-- in the itmfilter process; mpv only decodes the lossless stream and displays it.

local mp = require "mp"
local msg = require "mp.msg"
local utils = require "mp.utils"
local options = require "mp.options"

local opts = {
    command = "itmfilter",
    rung = "auto",
    device = "auto",
    precision = "auto",
}
options.read_options(opts, "itmfilter")

local HDR_VF = "@itmfilter-hdr10:format=colormatrix=bt.2020-ncl:primaries=bt.2020:gamma=pq:colorlevels=limited"

local current = nil        -- the routed file: {path, fifo, job, doc}
local restart_at = nil     -- a seek asked for: restart the pipe here (seconds)

local function words(s)
    local out = {}
    for w in s:gmatch("%S+") do out[#out + 1] = w end
    return out
end

local function itmfilter_args(...)
    local args = words(opts.command)
    for _, a in ipairs({...}) do args[#args + 1] = a end
    return args
end

-- The weight track of a local file, from `itmfilter info --json` (nil: none, or not ours).
local function probe(path)
    local res = mp.command_native({
        name = "subprocess", args = itmfilter_args("info", "--json", path),
        playback_only = false, capture_stdout = true, capture_stderr = true,
    })
    if res == nil or res.status == nil or res.status < 0 then
        msg.warn("cannot run itmfilter (" .. opts.command .. "); set --script-opts=itmfilter-command=...")
        return nil
    end
    if res.status == 2 then
        msg.warn((res.stderr or ""):gsub("%s+$", ""))
        return nil
    end
    local doc = utils.parse_json(res.stdout or "")
    if doc == nil or doc.carriage == nil then return nil end
    return doc
end

-- mpv's --start (a number, +N, -N from the end, N% or [[hh:]mm:]ss) in seconds from the start.
local function start_seconds(spec, duration)
    if spec == nil or spec == "" or spec == "none" then return 0 end
    local pct = spec:match("^([%d%.]+)%%$")
    if pct then return (tonumber(pct) or 0) / 100 * (duration or 0) end
    local sign, rest = spec:match("^([+-]?)(.*)$")
    local seconds = 0
    for part in rest:gmatch("[^:]+") do seconds = seconds * 60 + (tonumber(part) or 0) end
    if sign == "-" then seconds = math.max(0, (duration or 0) - seconds) end
    return seconds
end

local function make_fifo()
    local dir = os.getenv("XDG_RUNTIME_DIR") or os.getenv("TMPDIR") or "/tmp"
    local name = string.format("%s/itmfilter-%d-%d.nut", dir, utils.getpid(), math.random(1, 1e9))
    local res = mp.command_native({name = "subprocess", args = {"mkfifo", "-m", "600", name},
                                   playback_only = false})
    if res == nil or res.status ~= 0 then return nil end
    return name
end

local function stop_current()
    if current == nil then return end
    if current.job then mp.abort_async_command(current.job) end
    os.remove(current.fifo)
    current = nil
end

mp.add_hook("on_load", 50, function()
    local path = mp.get_property("stream-open-filename", "")
    local seek_to, doc = restart_at, nil
    if seek_to ~= nil and current ~= nil and current.path == path:gsub("^file://", "") then doc = current.doc end
    restart_at = nil
    stop_current()
    if path == "-" or (path:find("^%a[%w+.-]*://") and not path:find("^file://")) then return end  -- not a local file
    path = path:gsub("^file://", "")
    if doc == nil then
        seek_to = nil
        doc = probe(path)
        if doc == nil then return end
    end
    local duration = doc.video and doc.video.duration_s or nil
    local start = seek_to or start_seconds(mp.get_property("start"), duration)
    local fifo = make_fifo()
    if fifo == nil then
        msg.error("cannot make a named pipe; playing " .. path .. " as SDR")
        return
    end
    current = {path = path, fifo = fifo, doc = doc}
    local this = current
    this.job = mp.command_native_async({
        name = "subprocess", playback_only = false, capture_stderr = true,
        args = itmfilter_args("transcode", path, "-o", fifo, "--format", "nut", "--start",
                              string.format("%.6f", start), "--rung", opts.rung, "--device", opts.device,
                              "--precision", opts.precision, "--quiet"),
    }, function(_, res)
        this.job = nil
        if res and res.status ~= 0 and not res.killed_by_us then
            msg.error("itmfilter transcode failed: " .. ((res.stderr or ""):gsub("%s+$", "")))
            if current == this and not this.loaded then
                -- it failed before opening the pipe, and mpv waits in open() for a writer
                local unblock = io.open(fifo, "w")
                if unblock then unblock:close() end
            end
        end
    end)
    local vf = mp.get_property("vf", "")
    mp.set_property("file-local-options/vf", vf == "" and HDR_VF or (vf .. "," .. HDR_VF))
    mp.set_property("file-local-options/start", "none")
    mp.set_property("file-local-options/rebase-start-time", "no")
    mp.set_property("file-local-options/force-seekable", "yes")
    mp.set_property("file-local-options/force-media-title", mp.get_property("media-title", path))
    mp.set_property("stream-open-filename", fifo)
    msg.info(string.format("HDR10 through itmfilter (%s, rung %s) from %.3f s", doc.carriage, opts.rung, start))
end)

-- A seek in the pipe: restart it at the target and reload this playlist entry there.
mp.register_event("seek", function()
    if current == nil or restart_at ~= nil then return end
    local target = mp.get_property_number("time-pos")
    if target == nil then return end
    restart_at = math.max(0, target)
    msg.info(string.format("seek: restarting the filter at %.3f s", restart_at))
    mp.commandv("playlist-play-index", "current")
end)

mp.observe_property("video-out-params", "native", function(_, params)
    if current ~= nil and params ~= nil then
        msg.verbose(string.format("video-out-params: %s %s %s %s %s", params.pixelformat or "?",
                                  params.colormatrix or "?", params.primaries or "?",
                                  params.gamma or "?", params.colorlevels or "?"))
    end
end)

mp.register_event("file-loaded", function()
    if current ~= nil then current.loaded = true end
end)

mp.register_event("end-file", function()
    if restart_at == nil then stop_current() end
end)

mp.register_event("shutdown", stop_current)
