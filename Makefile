# Shortcuts for the README's commands; tools/bootstrap.sh is the single source of truth.
.PHONY: setup demo test lint

setup:
	bash tools/bootstrap.sh setup

demo:
	bash tools/bootstrap.sh demo

test:
	bash tools/bootstrap.sh test

lint: setup
	.venv/bin/python -m ruff check .
