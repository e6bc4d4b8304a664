"""A node's processes: what each builds, and how the primary runs its S3 workers."""
