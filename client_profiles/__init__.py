"""Client profiles for device classes and sites, and the files and tools native viewers need."""
