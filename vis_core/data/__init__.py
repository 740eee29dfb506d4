"""Datasets: YouTube-VIS / OVIS annotation files and their frames."""
