"""Synthetic video instance segmentation benchmark (`vis synth`).

Scenes of textured shapes (eight categories, see `shapes.py`) moving over a cluttered,
panning background, with occlusion by depth order, objects entering and leaving, changes
of scale, rotation, stretch and colour, camera noise and H.264 compression. Default frame
size 320 x 240 at 10 fps (`splits.py`). Every video is rendered with numpy from a seeded
`Scene`, so `generate.synthesize_video(config, seed, index)` gives back its exact frames
`[T, H, W, 3]` and label maps `[T, H, W]` before compression.

Modules: `splits` (config and presets), `scene` (sampling), `motion`, `shapes`,
`textures`, `background`, `clutter`, `noise`, `render`, `generate` (seeding),
`annotations` (YouTube-VIS json), `stats` (difficulty), `coco_images`, `writer`.
"""
