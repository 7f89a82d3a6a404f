"""Masks for your own video: read a video, turn painted or drawn scribbles into the agent's input, segment
it in chunks at a working size, write masks (PNG, RLE JSON, overlay video); the command line
(`python -m agent.segment`) and the browser page (`python -m agent.app`) are built on these.

This package depends on the core (agent.inference, agent.data, agent.config); the core never imports it.
"""
