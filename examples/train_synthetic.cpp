// The main job at this stage: train a 3-D segmentation network on built-in synthetic data, on
// the CPU, and report the Dice on held-out volumes. The data follows MONAI's create_test_image_3d
// recipe: spheres of random position, radius and intensity over uniform noise, rescaled to
// [0, 1]; the label is the union of the spheres.
//
//   --arch tiny        two conv / instance norm / PReLU blocks, SGD with momentum (default)
//   --arch monai-unet  MONAI's UNet (16..256 channels, 2 residual units), Adam
//
//   vox_train_synthetic [--arch A] [--iterations N] [--size S] [--batch B] [--threads T] [--seed K]
#include <algorithm>
#include <chrono>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <vox/vox.hpp>

using namespace vox;

namespace {

struct Options {
  std::string arch = "tiny";
  int iterations = 0;  // 0: the architecture's default
  int64_t size = 0;
  int64_t batch = 2;
  int threads = 0;  // 0: OpenMP's default
  uint64_t seed = 1;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) {
      if (i + 1 >= argc) throw Error(std::string("vox_train_synthetic: ") + name + " needs a value");
      return std::string(argv[++i]);
    };
    if (arg == "--arch") o.arch = value("--arch");
    else if (arg == "--iterations") o.iterations = std::stoi(value("--iterations"));
    else if (arg == "--batch") o.batch = std::stoll(value("--batch"));
    else if (arg == "--size") o.size = std::stoll(value("--size"));
    else if (arg == "--threads") o.threads = std::stoi(value("--threads"));
    else if (arg == "--seed") o.seed = std::stoull(value("--seed"));
    else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: vox_train_synthetic [--arch tiny|monai-unet] [--iterations N] [--size S] [--batch B] [--threads T] [--seed K]\n";
      std::exit(0);
    } else {
      throw Error("vox_train_synthetic: unknown option " + arg + " (try --help)");
    }
  }
  const bool unet = o.arch == "monai-unet";
  if (!unet && o.arch != "tiny") throw Error("vox_train_synthetic: --arch must be tiny or monai-unet, got " + o.arch);
  if (o.iterations == 0) o.iterations = unet ? 200 : 120;
  if (o.size == 0) o.size = unet ? 48 : 24;
  if (o.iterations < 1 || o.size < 16 || o.batch < 1) throw Error("vox_train_synthetic: needs --iterations >= 1, --size >= 16, --batch >= 1");
  if (unet && o.size % 16 != 0) throw Error("vox_train_synthetic: the MONAI U-Net halves the volume 4 times; --size must be a multiple of 16");
  return o;
}

// A batch of volumes [N, S, S, S, 1] and labels [N, S, S, S], MONAI's create_test_image_3d
// recipe with one class: 8 spheres (radius S/12 to S/5) of intensity U(0.5, 1), the maximum with
// noise U(0, 0.5), then rescaled to [0, 1].
struct Batch {
  Tensor image, label;
};

Batch make_batch(int64_t n, int64_t s, Generator& gen) {
  constexpr int kSpheres = 8;
  const double rad_min = std::max(2.0, static_cast<double>(s) / 12), rad_max = static_cast<double>(s) / 5;
  Tensor image = uniform({n, s, s, s, 1}, 0.0, 0.5, DType::f32, &gen);
  Tensor label = zeros({n, s, s, s}, DType::i64);
  const auto draws = rand({n, kSpheres, 5}, DType::f64, &gen).to_vector<double>();
  float* img = image.data<float>();
  int64_t* lab = label.data<int64_t>();
  for (int64_t b = 0; b < n; ++b)
    for (int k = 0; k < kSpheres; ++k) {
      const double* d = draws.data() + (b * kSpheres + k) * 5;
      const double radius = rad_min + d[3] * (rad_max - rad_min);
      double centre[3];
      for (int a = 0; a < 3; ++a) centre[a] = radius + d[a] * (static_cast<double>(s) - 2 * radius);
      const float intensity = static_cast<float>(0.5 + 0.5 * d[4]);
      for (int64_t z = 0; z < s; ++z)
        for (int64_t y = 0; y < s; ++y)
          for (int64_t x = 0; x < s; ++x) {
            const double dz = static_cast<double>(z) - centre[0], dy = static_cast<double>(y) - centre[1],
                         dx = static_cast<double>(x) - centre[2];
            if (dz * dz + dy * dy + dx * dx > radius * radius) continue;
            const int64_t i = ((b * s + z) * s + y) * s + x;
            img[i] = std::max(img[i], intensity);
            lab[i] = 1;
          }
    }
  for (int64_t b = 0; b < n; ++b) {  // rescale each volume to [0, 1]
    float* v = img + b * s * s * s;
    const auto [lo, hi] = std::minmax_element(v, v + s * s * s);
    const float low = *lo, range = std::max(*hi - *lo, 1e-6f);
    for (int64_t i = 0; i < s * s * s; ++i) v[i] = (v[i] - low) / range;
  }
  return {image, label};
}

// conv(k3) -> instance norm -> PReLU, twice, then a 1x1x1 conv to two classes.
struct TinyNet {
  std::vector<Tensor> params;
  Tensor w1, b1, a1, w2, b2, a2, w3, b3;

  explicit TinyNet(Generator& gen, int64_t width = 8) {
    auto he = [&](Shape s, int64_t fan_in) { return randn(s, DType::f32, &gen, 0.0, std::sqrt(2.0 / static_cast<double>(fan_in))); };
    w1 = he({width, 3, 3, 3, 1}, 27), b1 = zeros({width}), a1 = full({1}, 0.25);
    w2 = he({width, 3, 3, 3, width}, 27 * width), b2 = zeros({width}), a2 = full({1}, 0.25);
    w3 = he({2, 1, 1, 1, width}, width), b3 = zeros({2});
    params = {w1, b1, a1, w2, b2, a2, w3, b3};
    for (Tensor& p : params) p.set_requires_grad();
  }

  Tensor forward(const Tensor& x) const {
    Tensor h = prelu(instance_norm(conv(x, w1, b1, {.padding = {1}})), a1);
    h = prelu(instance_norm(conv(h, w2, b2, {.padding = {1}})), a2);
    return conv(h, w3, b3);
  }
};

double foreground_dice(const Tensor& logits, const Tensor& label) {
  const auto pred = argmax(logits, -1).to_vector<int64_t>();
  const auto truth = label.to_vector<int64_t>();
  double inter = 0, total = 0;
  for (size_t i = 0; i < pred.size(); ++i) {
    inter += (pred[i] == 1 && truth[i] == 1);
    total += (pred[i] == 1) + (truth[i] == 1);
  }
  return total == 0 ? 1.0 : 2.0 * inter / total;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  if (o.threads > 0) set_num_threads(o.threads);
  manual_seed(o.seed);
  Generator gen(o.seed);
  const bool unet = o.arch == "monai-unet";
  std::unique_ptr<nn::models::MonaiUNet> monai;
  std::unique_ptr<TinyNet> tiny;
  std::unique_ptr<optim::Optimizer> optimizer;
  if (unet) {
    monai = std::make_unique<nn::models::MonaiUNet>();
    optimizer = std::make_unique<optim::Adam>(monai->parameters(), optim::AdamOptions{.lr = 1e-3});
  } else {
    tiny = std::make_unique<TinyNet>(gen);
    optimizer = std::make_unique<optim::SGD>(tiny->params, optim::SgdOptions{.lr = 0.05, .momentum = 0.9});
  }
  auto forward = [&](const Tensor& x) { return unet ? monai->forward(x) : tiny->forward(x); };
  std::printf("vox: training %s on synthetic spheres (%lld^3 volumes, batch %lld, %d iterations, %d threads)\n",
              unet ? "the MONAI U-Net (4,806,481 parameters)" : "a small conv net", static_cast<long long>(o.size),
              static_cast<long long>(o.batch), o.iterations, num_threads());
  const auto start = std::chrono::steady_clock::now();
  double smoothed = 0;
  for (int it = 1; it <= o.iterations; ++it) {
    const Batch b = make_batch(o.batch, o.size, gen);
    const Tensor loss = cross_entropy(forward(b.image), b.label);
    loss.backward();
    optimizer->step();
    optimizer->zero_grad();
    const double value = loss.item<double>();
    smoothed = it == 1 ? value : 0.9 * smoothed + 0.1 * value;
    if (it % 10 == 0 || it == o.iterations) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("  iteration %4d/%d  loss %.4f  %.2f it/s  eta %.0f s\n", it, o.iterations, smoothed, it / seconds,
                  (o.iterations - it) * seconds / it);
      std::fflush(stdout);
    }
  }
  if (unet) monai->eval();
  Generator held_out(o.seed + 1000);
  double dice = 0;
  constexpr int kHeldOut = 4;
  for (int v = 0; v < kHeldOut; ++v) {
    const Batch test = make_batch(1, o.size, held_out);
    NoGradGuard no_grad;
    dice += foreground_dice(forward(test.image), test.label) / kHeldOut;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double target = unet ? 0.8 : 0.9;
  std::printf("held-out Dice (%d volumes): %.4f (target %.2f)   trained in %.1f s\n", kHeldOut, dice, target, seconds);
  return dice >= target ? 0 : 1;
} catch (const vox::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
