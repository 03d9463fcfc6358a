"""One process of a launched run: `python -m keras_medseg.training.distribute.worker PAYLOAD FOLDER`.

Started by `keras_medseg.training.distribute.launch` with its rank in the
environment. It imports Keras, joins the backend's engine before anything
else runs on the backend (TensorFlow wants its strategy first, JAX its
distributed runtime), unpickles `(fn, args, kwargs)` from PAYLOAD, runs
`fn`, waits at a barrier for every rank, rank 0 writes the pickled
return value to `FOLDER/result.pkl` (atomically), and the process exits at
once (status 0; `os._exit` after flushing its output and logs: the engines'
shutdown handshakes take seconds and have nothing left to do). An exception is written as
one line to `FOLDER/error<rank>.txt` for the launcher's message, with the
traceback on stderr, and the process exits with status 1.
"""

import os
import pickle
import sys
import traceback


def main(argv):
    payload, folder = argv[1], argv[2]
    rank = os.environ.get("KERAS_MEDSEG_PROCESS_ID", "?")
    try:
        from keras_medseg.utils.quiet_backend import import_backend

        import_backend(verbose=False)
        from keras_medseg.training.distribute.group import ENV_COORDINATOR, ENV_RANK, ENV_SIZE, process_group

        group = process_group()  # joins from the environment
        for name in (ENV_RANK, ENV_SIZE, ENV_COORDINATOR):  # not inherited by processes `fn` may start
            os.environ.pop(name, None)
        with open(payload, "rb") as f:
            fn, args, kwargs = pickle.load(f)
        result = fn(*args, **kwargs)
        group.barrier("keras_medseg run end")
        if group.is_writer:
            from keras_medseg.utils.atomic_io import atomic_path

            with atomic_path(os.path.join(folder, "result.pkl")) as tmp, open(tmp, "wb") as f:
                pickle.dump(result, f)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the launcher's one line
        from keras_medseg.utils.errors import one_line_message

        line = one_line_message(exc) if str(exc) else type(exc).__name__
        try:
            with open(os.path.join(folder, f"error{rank}.txt"), "w") as f:
                f.write(line.replace(" (run with --debug for details)", ""))
        except OSError:
            pass
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # no engine shutdown handshake with peers that may be gone
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # every rank passed the end barrier: skip the engines' exit handshakes (seconds, nothing to save)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
