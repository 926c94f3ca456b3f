"""Core ML packages on any OS: read a .mlpackage's structure (package.py). Running one needs macOS Core ML."""
