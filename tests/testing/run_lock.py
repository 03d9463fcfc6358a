"""A run folder's lock held by another live process, for the "second writer is refused" tests."""

import contextlib
import subprocess
import sys
import textwrap


@contextlib.contextmanager
def run_folder_held_by_another_process(folder):
    """Yield the pid of a child process that holds `folder/.lock` (flock, pid written) until the block ends.

    The child is a bare Python (no backend import), killed and reaped on exit, so the lock dies with it as it
    would with a crashed trainer.
    """
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, time
        fd = os.open({str(folder / ".lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(os.getpid()).encode())
        print("held", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held", "the lock-holding child did not start"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
