"""HTTP dialects. Thin: parse the request, call a task, shape the response; nothing vendor- or tensor-specific."""
