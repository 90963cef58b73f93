"""A small loop-mounted ext4 file system per host (real fsync), holding that
host's slot directories, so the nemesis can fill it; tmpfs if a loop mount
is refused here."""
import os
import subprocess

from netns import sh

FILLER = ".mrf_fill"


class Disk:
    def __init__(self, image, mountpoint, size_mb):
        self.image = image
        self.mountpoint = mountpoint
        self.size_mb = size_mb
        self.kind = None
        self.filled = False

    def mount(self):
        os.makedirs(self.mountpoint, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size_mb << 20)
        try:
            sh(["mkfs.ext4", "-q", "-F", "-m", "0", self.image])
            sh(["mount", "-o", "loop", self.image, self.mountpoint])
            self.kind = "ext4"
        except RuntimeError:
            sh(["mount", "-t", "tmpfs", "-o", "size=%dm" % self.size_mb, "tmpfs", self.mountpoint])
            self.kind = "tmpfs"

    def fill(self, leave_bytes=1 << 20):
        """fallocate a file taking all free space but leave_bytes."""
        st = os.statvfs(self.mountpoint)
        free = st.f_bavail * st.f_frsize
        size = max(0, free - leave_bytes)
        path = os.path.join(self.mountpoint, FILLER)
        if size > 0:
            sh(["fallocate", "-l", str(size), path])
        self.filled = True
        return size

    def free(self):
        try:
            os.unlink(os.path.join(self.mountpoint, FILLER))
        except FileNotFoundError:
            pass
        self.filled = False

    def wipe(self, path):
        """Removes a slot directory: the slot's data is lost."""
        subprocess.run(["rm", "-rf", path])

    def unmount(self):
        if os.path.ismount(self.mountpoint):
            r = subprocess.run(["umount", self.mountpoint], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", self.mountpoint], capture_output=True)
        try:
            os.unlink(self.image)
        except FileNotFoundError:
            pass


def unmount_all_under(root):
    """Unmounts every mount below root (cleanup of an earlier run)."""
    try:
        mounts = [l.split()[1] for l in open("/proc/mounts")]
    except OSError:
        return
    for m in sorted((m for m in mounts if m.startswith(root.rstrip("/") + "/")), reverse=True):
        r = subprocess.run(["umount", m], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True)
