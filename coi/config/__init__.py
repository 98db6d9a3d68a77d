"""Configuration: the layers and their merge, the schema and model, trust of project files,
tools as data, mounts, and the connection a config names."""
