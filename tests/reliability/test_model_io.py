
import keras
import numpy as np
import pytest

from keras_medseg.utils.model_io import load_model


def _save(model, tmp_path, name="m.keras"):
    path = str(tmp_path / name)
    model.save(path)
    return path


def test_round_trip(tmp_path):
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    loaded = load_model(_save(model, tmp_path))
    x = np.ones((1, 3), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_lambda_layer_is_refused(tmp_path):
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    with pytest.raises(ValueError, match="safe_mode=True"):
        load_model(_save(model, tmp_path))


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.keras"):
        load_model(str(tmp_path / "nowhere.keras"))
    inp = keras.Input((3,))
    path = _save(keras.Model(inp, keras.layers.Dense(2)(inp)), tmp_path)
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.keras")
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.keras"):
        load_model(cut)
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="notes.keras"):
        load_model(str(text))
    h5 = tmp_path / "weights.h5"
    h5.write_bytes(b"")
    with pytest.raises(ValueError, match=".keras"):
        load_model(str(h5))


@pytest.mark.parametrize("command", [["evaluate", "{path}", "--data", "qtips"], ["explain", "{path}", "{image}"],
                                     ["kernels", "{path}"]])
def test_cli_refuses_a_lambda_model(command, tmp_path, capsys):
    from skimage import io

    from keras_medseg.cli import main

    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    path = _save(model, tmp_path, "lambda.keras")
    image = str(tmp_path / "image.png")
    io.imsave(image, np.zeros((8, 8), "uint8"), check_contrast=False)
    argv = [a.format(path=path, image=image) for a in command]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "safe_mode=True" in err and "lambda.keras" in err


@pytest.mark.slow
def test_plain_keras_load_of_a_saved_zoo_model_after_import(tmp_path):
    """`import keras_medseg` registers everything a compiled zoo model needs (metrics included).

    One fresh interpreter (importing Keras and its backend costs about 10 CPU s): a plain `keras.saving.load_model`
    fails while keras_medseg has not been imported, then the same load after `import keras_medseg` succeeds.
    """
    import json
    import subprocess
    import sys

    from keras_medseg import zoo

    path = _save(zoo.build("unet", input_size=16, depth=2, filters=4), tmp_path)
    code = (
        "import json, sys, keras\n"
        "try:\n"
        "    keras.saving.load_model(sys.argv[1])\n"
        "    before = None\n"
        "except Exception as e:\n"
        "    before = f'{type(e).__name__}: {e}'\n"
        "medseg_was_imported = 'keras_medseg' in sys.modules\n"
        "import keras_medseg\n"
        "print(json.dumps({'before': before, 'medseg_was_imported': medseg_was_imported,\n"
        "                  'after': keras.saving.load_model(sys.argv[1]).name}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # what the import has to register: the zoo's loss and metrics (keras names the first one it cannot find)
    assert result["before"] is not None and "keras_medseg>" in result["before"], result
    assert not result["medseg_was_imported"], result
    assert result["after"].endswith("unet"), result
