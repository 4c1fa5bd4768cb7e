"""Code assistant: sandboxed execution, tasks (completion, generation, transformation, debugging, review)."""
