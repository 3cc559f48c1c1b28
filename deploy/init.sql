-- Sample schema and data for docker-compose.yml's MariaDB. The image runs this once, on an
-- empty data directory, in MARIADB_DATABASE, after granting MARIADB_USER everything on it;
-- `make stack` does the same on the local server.
CREATE TABLE IF NOT EXISTS work_items (
    tenant_id INT NOT NULL, queue VARCHAR(50) NOT NULL, status VARCHAR(20) NOT NULL);
INSERT INTO work_items VALUES
    (1, 'billing', 'new'), (1, 'billing', 'done'), (2, 'reports', 'new');
