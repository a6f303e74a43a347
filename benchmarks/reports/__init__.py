"""What is read off stored results: reported numbers, tables (Markdown, LaTeX, CSV), plots and comparisons."""
