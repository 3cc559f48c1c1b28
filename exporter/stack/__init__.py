"""`make stack`: docker-compose.yml's topology as local processes, from the same files."""
