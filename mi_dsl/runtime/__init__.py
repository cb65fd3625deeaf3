"""Running a compiled plan: loading models (`models`), the on-disk cache (`cache`), ..."""
