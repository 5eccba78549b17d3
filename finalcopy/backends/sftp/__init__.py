"""SSH/SFTP destinations (asyncssh): pipelined writes, server-side hashing, resume after a drop."""

from finalcopy.backends.sftp.backend import SftpBackend, open_sftp_backend

__all__ = ["SftpBackend", "open_sftp_backend"]
