"""(wing docstring written after the split)"""
