"""What the documents promise: README blocks pasted, the map resolved, the layout kept."""
