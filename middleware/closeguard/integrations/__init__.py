"""Small pieces for frameworks that catch a WebSocket's exceptions before closeguard can.

Each module imports its framework and only its framework; import the one for yours.
docs/frameworks.md says, per framework, how to mount closeguard and whether one is needed.
"""
