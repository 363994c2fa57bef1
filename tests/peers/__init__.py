"""Real local peers (S3 servers, sshd hosts, ansible-runner) started by the test fixtures."""
