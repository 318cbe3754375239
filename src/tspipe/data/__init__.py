"""The data: annotations, videos, clips, optical flow and the SynthActions demo benchmark.

Modules:

- ``annotations/``: ActivityNet JSON, THUMOS14 text files and TSP's CSVs read into one model
- ``video/``: probe, decode, read frames by index, standardize, encode (PyAV and others)
- ``download``: an annotation set made a verified local video set, with its manifest
- ``download_sources``: where a video's bytes come from (yt-dlp, HTTP, fsspec, local files)
- ``clip_sampler``: the one clip sampler, clip windows on an exact frame grid
- ``clips``: TSP's ground-truth segment table (actions and background) and its files
- ``clips_compare``: how close a ground-truth table comes to TSP's published CSV
- ``flow``: optical flow for I3D's flow stream, stored as quantized uint8
- ``synth``: SynthActions, the demo's untrimmed videos: planned, encoded, annotated
- ``synth_corpus``: its trimmed-clip corpus, the base stage's stand-in for Kinetics
- ``synth_render``: the synth renderer: action patterns, motion and the camera, per frame
- ``synth_sprites``: what the renderer draws: the actor, the distractors, the background
- ``synth_encode``: rendered frames to H.264 files, and the manifests that resume them
"""
