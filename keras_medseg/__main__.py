import sys

from keras_medseg.cli import main

sys.exit(main())
