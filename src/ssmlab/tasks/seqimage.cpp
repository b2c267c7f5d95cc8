// Sequential image classification (spec §2.4). Layout and segment rules: seqimage.h.
#include "ssmlab/tasks/seqimage.h"

#include <ATen/ATen.h>

#include <map>
#include <utility>

#include "ssmlab/core/error.h"
#include "ssmlab/core/rng.h"
#include "ssmlab/data/cifar10.h"
#include "ssmlab/data/idx.h"

namespace ssmlab::tasks {
namespace {

constexpr const char* kFashionMnistDefault = "/usr/share/datasets/fashion-mnist";
constexpr const char* kCifarDefault = ".data/cifar10";

// Builds the segments of one split from its seeds; names repeated within the split get "_2", "_3", ...
std::vector<Segment> build_split(const SeqImageConfig& cfg, const data::ImageSet& images,
                                 const std::vector<SeqImageSegmentSpec>& specs, const std::vector<uint64_t>& seeds,
                                 const std::string& split) {
  std::vector<Segment> out;
  std::map<std::string, int> seen;
  for (size_t i = 0; i < specs.size(); ++i) {
    std::string name = specs[i].name.empty() ? split : specs[i].name;
    const int n = ++seen[name];
    if (n > 1) name += str("_", n);
    out.push_back(make_seqimage_segment(images, specs[i], name, seeds[i], cfg.downsample));
  }
  return out;
}

}  // namespace

void check_seqimage_config(const SeqImageConfig& cfg) {
  SSMLAB_CHECK(cfg.dataset != "idx" || !cfg.path.empty(),
               "dataset idx needs a path: a folder with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
               "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]");
  SSMLAB_CHECK(!cfg.train.empty() && !cfg.test.empty(), "needs at least one train and one test segment; got ",
               cfg.train.size(), " train and ", cfg.test.size(), " test");
  SSMLAB_CHECK(cfg.downsample >= 1, "downsample must be >= 1; got ", cfg.downsample);
}

std::string seqimage_path(const SeqImageConfig& cfg) {
  if (!cfg.path.empty()) return cfg.path;
  return cfg.dataset == "cifar10" ? kCifarDefault : kFashionMnistDefault;
}

data::ImageSet load_seqimage_split(const SeqImageConfig& cfg, const std::string& split) {
  const std::string folder = seqimage_path(cfg);
  if (cfg.dataset == "cifar10") return data::load_cifar10(folder, split);
  return data::load_idx(folder, split, kSeqImageClasses);
}

at::Tensor image_sequences(const at::Tensor& images, int64_t downsample) {
  SSMLAB_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte,
               "image_sequences: images must be (N, C, H, W) uint8; got ", shape_str(images.sizes()), " ",
               c10::toString(images.scalar_type()));
  const int64_t N = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  SSMLAB_CHECK(downsample >= 1 && H % downsample == 0 && W % downsample == 0, "downsample ", downsample,
               " must divide the image height and width; the images are ", H, " x ", W);
  at::Tensor x = images.to(at::kFloat).div_(255.0);  // (N, C, H, W) in [0, 1], spec §2.4: ToTensor() only
  if (downsample > 1) x = at::avg_pool2d(x, {downsample, downsample}, {downsample, downsample});  // (N, C, H/k, W/k)
  return x.reshape({N, C, -1}).permute({0, 2, 1}).contiguous();  // (N, H W, C), p = W row + col
}

at::Tensor seeded_permutation(int64_t n, uint64_t seed) {
  at::Tensor perm = at::arange(n, at::kLong);  // (n)
  int64_t* p = perm.data_ptr<int64_t>();
  Rng rng(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.randint(0, i + 1)]);
  return perm;
}

SeqImageSeeds seqimage_seeds(const SeqImageConfig& cfg) {
  // spec §2.4: np.random.seed(123); train seeds randint(0, 2^31), then test seeds randint(2^31, 2^32).
  Rng split_rng(static_cast<uint64_t>(cfg.seed));
  SeqImageSeeds s;
  for (size_t i = 0; i < cfg.train.size(); ++i) s.train.push_back(split_rng.randint(0, int64_t{1} << 31));
  for (size_t i = 0; i < cfg.test.size(); ++i)
    s.test.push_back(split_rng.randint(int64_t{1} << 31, int64_t{1} << 32));
  return s;
}

Segment make_seqimage_segment(const data::ImageSet& split, const SeqImageSegmentSpec& spec, const std::string& name,
                              uint64_t seed, int64_t downsample) {
  const int64_t available = split.images.size(0);
  const int64_t count = spec.count == 0 ? available : spec.count;
  SSMLAB_CHECK(count >= 1 && count <= available, "segment '", name, "' asks for ", count, " images; ", split.source,
               " holds ", available);
  const at::Tensor keep = seeded_permutation(available, seed).narrow(0, 0, count);  // (M)
  Segment seg;
  seg.name = name;
  seg.inputs = image_sequences(split.images.index_select(0, keep), downsample);  // (M, L, C)
  seg.targets = split.labels.index_select(0, keep);                              // (M)
  seg.seq_len = seg.inputs.size(1);
  return seg;
}

SeqImageTask::SeqImageTask(SeqImageConfig cfg) : cfg_(std::move(cfg)) { check_seqimage_config(cfg_); }

TaskShape SeqImageTask::shape() const {
  TaskShape s;
  s.input = InputKind::features;
  s.in_channels = cfg_.dataset == "cifar10" ? data::kCifarChannels : 1;
  s.target = TargetKind::per_sequence;
  s.num_outputs = kSeqImageClasses;
  return s;
}

Splits SeqImageTask::make_splits() const {
  const SeqImageSeeds seeds = seqimage_seeds(cfg_);
  Splits splits;
  splits.train = build_split(cfg_, load_seqimage_split(cfg_, "train"), cfg_.train, seeds.train, "train");
  splits.test = build_split(cfg_, load_seqimage_split(cfg_, "test"), cfg_.test, seeds.test, "test");
  return splits;
}

std::vector<Segment> SeqImageTask::make_test() const {
  return build_split(cfg_, load_seqimage_split(cfg_, "test"), cfg_.test, seqimage_seeds(cfg_).test, "test");
}

}  // namespace ssmlab::tasks
