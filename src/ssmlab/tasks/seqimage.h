// Sequential image classification (spec §2.4; SB attack/data/img_classification.py): an image becomes the
// sequence of its pixels in row-major raster order, and the model names its class from the whole sequence.
//   images  (N, C, H, W) uint8 from data/ (CIFAR-10 binary batches, or an IDX folder such as Fashion-MNIST)
//   pixels  x / 255 in [0, 1]: ToTensor() only, no mean/std normalisation, no augmentation
//   inputs  (M, H W, C) float32, position p = W row + col holds the C channel values of pixel (row, col)
//   targets (M) int64 class labels in [0, 10)
// Optional `downsample` k average-pools k x k blocks first (H/k x W/k pixels): not in the paper (k = 1), it
// makes CPU runs short.
//
// Segments (spec §2.4): a split Rng seeded with `seed` hands out one seed per segment, train segments first,
// then test ones (train seeds from [0, 2^31), test seeds from [2^31, 2^32), as the paper's randint calls); a
// segment draws a random permutation of its split with its seed and keeps the first `count` images, a fixed
// shuffled order that the loader never reshuffles. ssmlab::Rng (mt19937_64 + Fisher-Yates) stands in for
// numpy's np.random.seed / permutation, so the orders are not numpy's: the same seeds give other images.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ssmlab/core/fields.h"
#include "ssmlab/data/images.h"
#include "ssmlab/tasks/task.h"

namespace ssmlab::tasks {

inline constexpr int64_t kSeqImageClasses = 10;

struct SeqImageSegmentSpec {
  std::string name;  // metric key ("test_acc/<name>"); empty: the split's name, "_2", "_3" for repeats
  int64_t count = 0;

  template <class V>
  void visit(V& v) {
    v("name", name, "segment name, the metric key suffix; empty = the split name (train / test)");
    v("count", count, "images in this segment (the first of its permutation); 0 = the whole split",
      Check::at_least(0));
  }
};

struct SeqImageConfig {
  std::string dataset = "cifar10";
  std::string path;
  int64_t downsample = 1;
  int64_t seed = 123;
  std::vector<SeqImageSegmentSpec> train = {{}};
  std::vector<SeqImageSegmentSpec> test = {{}};

  template <class V>
  void visit(V& v) {
    v("dataset", dataset,
      "cifar10: a folder of the official binary batches; fashion_mnist or idx: an MNIST-layout IDX folder "
      "(train-images-idx3-ubyte[.gz], ...)",
      Check::one_of({"cifar10", "fashion_mnist", "idx"}));
    v("path", path,
      "data folder; empty = the dataset's default (cifar10: .data/cifar10, made by scripts/cifar10-binary.sh; "
      "fashion_mnist: /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist; idx: required)");
    v("downsample", downsample, "average-pool k x k pixel blocks before flattening; 1 = the paper's full images",
      Check::at_least(1));
    v("seed", seed, "seed of the split Rng that hands each segment its permutation seed (spec §2.4)",
      Check::at_least(0));
    v("train", train, "training segments, in order");
    v("test", test, "test segments");
  }
};

// Checks what needs no data: a path for dataset idx, at least one train and one test segment.
void check_seqimage_config(const SeqImageConfig& cfg);

// The data folder cfg names (path, else the dataset's default).
std::string seqimage_path(const SeqImageConfig& cfg);

// One split ("train" or "test") of the configured data set, as data/ reads it.
data::ImageSet load_seqimage_split(const SeqImageConfig& cfg, const std::string& split);

// Images (N, C, H, W) uint8 -> pixel sequences (N, (H/k)(W/k), C) float32 in [0, 1]: x / 255, k x k average
// pooling (H and W divisible by k), row-major order p = (W/k) row + col.
at::Tensor image_sequences(const at::Tensor& images, int64_t downsample);

// A permutation of [0, n) drawn from `seed` (Fisher-Yates over ssmlab::Rng): (n) int64.
at::Tensor seeded_permutation(int64_t n, uint64_t seed);

// The per-segment seeds, train segments first (spec §2.4).
struct SeqImageSeeds {
  std::vector<uint64_t> train, test;
};
SeqImageSeeds seqimage_seeds(const SeqImageConfig& cfg);

// Segment from a loaded split: the first `spec.count` images of seeded_permutation(N, seed).
Segment make_seqimage_segment(const data::ImageSet& split, const SeqImageSegmentSpec& spec, const std::string& name,
                              uint64_t seed, int64_t downsample);

class SeqImageTask : public Task {
 public:
  explicit SeqImageTask(SeqImageConfig cfg);
  std::string name() const override { return "seqimage"; }
  TaskShape shape() const override;  // features (C = 3 for cifar10, 1 for IDX), per_sequence, 10 classes
  Splits make_splits() const override;
  std::vector<Segment> make_test() const override;  // reads only the test files
  const SeqImageConfig& config() const { return cfg_; }

 private:
  SeqImageConfig cfg_;
};

}  // namespace ssmlab::tasks
