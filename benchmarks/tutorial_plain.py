"""The TensorFlow tutorial CNN as a plain script, the reference that benchmarks/baseline.py compares to.

    uv run python benchmarks/tutorial_plain.py PATH/TO/mnist.npz [--test-each-epoch]

It is the tutorial's code with two changes only: the data comes from a local mnist.npz (the same file
cnnsweep reads) instead of a download, and a callback times each epoch. Prints one JSON line.
With --test-each-epoch (for benchmarks/time_to_99.py) the callback also evaluates the test set after
each epoch, outside the timed part, and the line lists each epoch's training seconds and test accuracy.
"""

import json
import sys
import time

import numpy as np
import tensorflow as tf
from tensorflow.keras import layers, models


class EpochTimer(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds, self.test_accuracy = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)
        if TEST_EACH_EPOCH:
            self.test_accuracy.append(self.model.evaluate(test_images, test_labels, verbose=0)[1])


TEST_EACH_EPOCH = "--test-each-epoch" in sys.argv[2:]


with np.load(sys.argv[1]) as data:
    train_images, train_labels = data["x_train"], data["y_train"]
    test_images, test_labels = data["x_test"], data["y_test"]
train_images, test_images = train_images / 255.0, test_images / 255.0

model = models.Sequential()
model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.MaxPooling2D((2, 2)))
model.add(layers.Conv2D(64, (3, 3), activation="relu"))
model.add(layers.Flatten())
model.add(layers.Dense(64, activation="relu"))
model.add(layers.Dense(10, activation="softmax"))

model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
timer = EpochTimer()
model.fit(train_images, train_labels, epochs=5, callbacks=[timer])
test_loss, test_acc = model.evaluate(test_images, test_labels, verbose=2)
print(json.dumps({"test_accuracy": test_acc, "seconds_per_epoch": float(np.mean(timer.seconds)),
                  "params": model.count_params(), "epoch_seconds": timer.seconds,
                  "epoch_test_accuracy": timer.test_accuracy}))
