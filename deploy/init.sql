-- Sample schema and data for docker-compose.yml's MariaDB.
CREATE TABLE IF NOT EXISTS platform.work_items (
    tenant_id INT NOT NULL, queue VARCHAR(50) NOT NULL, status VARCHAR(20) NOT NULL);
INSERT INTO platform.work_items VALUES
    (1, 'billing', 'new'), (1, 'billing', 'done'), (2, 'reports', 'new');
GRANT SELECT ON platform.* TO 'cockpit'@'%';
