"""Tests of the job lifecycle package: the written table, its API, effects and the single-writer rule."""
