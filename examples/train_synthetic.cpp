// The main job at this stage: train a small 3-D segmentation network on built-in synthetic data
// (bright spheres of random size and position in noise), on the CPU, and report the Dice on
// held-out volumes. It exercises the whole floor stack: channels-last conv, instance norm,
// PReLU, cross-entropy, the autograd tape and the threaded kernels.
//
//   vox_train_synthetic [--iterations N] [--size S] [--threads T] [--seed K]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <vox/vox.hpp>

using namespace vox;

namespace {

struct Options {
  int iterations = 120;
  int64_t size = 24;
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
    if (arg == "--iterations") o.iterations = std::stoi(value("--iterations"));
    else if (arg == "--size") o.size = std::stoll(value("--size"));
    else if (arg == "--threads") o.threads = std::stoi(value("--threads"));
    else if (arg == "--seed") o.seed = std::stoull(value("--seed"));
    else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: vox_train_synthetic [--iterations N] [--size S] [--threads T] [--seed K]\n";
      std::exit(0);
    } else {
      throw Error("vox_train_synthetic: unknown option " + arg + " (try --help)");
    }
  }
  if (o.iterations < 1 || o.size < 8) throw Error("vox_train_synthetic: needs --iterations >= 1 and --size >= 8");
  return o;
}

// A batch of volumes [N, S, S, S, 1] and their labels [N, S, S, S] (1 inside a sphere).
struct Batch {
  Tensor image, label;
};

Batch make_batch(int64_t n, int64_t s, Generator& gen) {
  const auto centres = uniform({n, 3}, 0.3 * static_cast<double>(s), 0.7 * static_cast<double>(s), DType::f64, &gen).to_vector<double>();
  const auto radii = uniform({n}, 0.12 * static_cast<double>(s), 0.28 * static_cast<double>(s), DType::f64, &gen).to_vector<double>();
  Tensor image = randn({n, s, s, s, 1}, DType::f32, &gen, 0.0, 0.6);
  Tensor label = zeros({n, s, s, s}, DType::i64);
  float* img = image.data<float>();
  int64_t* lab = label.data<int64_t>();
  for (int64_t b = 0; b < n; ++b)
    for (int64_t z = 0; z < s; ++z)
      for (int64_t y = 0; y < s; ++y)
        for (int64_t x = 0; x < s; ++x) {
          const double dz = static_cast<double>(z) - centres[static_cast<size_t>(3 * b)];
          const double dy = static_cast<double>(y) - centres[static_cast<size_t>(3 * b + 1)];
          const double dx = static_cast<double>(x) - centres[static_cast<size_t>(3 * b + 2)];
          if (dz * dz + dy * dy + dx * dx <= radii[static_cast<size_t>(b)] * radii[static_cast<size_t>(b)]) {
            const int64_t i = ((b * s + z) * s + y) * s + x;
            img[i] += 1.0f;
            lab[i] = 1;
          }
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

// SGD with momentum (PyTorch's form: v = mu v + g; p -= lr v).
struct Sgd {
  double lr, momentum;
  std::vector<Tensor> velocity;
  void step(std::vector<Tensor>& params) {
    NoGradGuard no_grad;
    if (velocity.empty())
      for (const Tensor& p : params) velocity.push_back(zeros_like(p));
    for (size_t i = 0; i < params.size(); ++i) {
      velocity[i] = add(mul(velocity[i], scalar(momentum)), params[i].grad());
      params[i].detach().copy_from(sub(params[i].detach(), mul(velocity[i], scalar(lr))));
      params[i].zero_grad();
    }
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
  Generator gen(o.seed);
  TinyNet net(gen);
  Sgd sgd{0.05, 0.9, {}};
  std::printf("vox: training a 3-D segmentation net on synthetic spheres (%lld^3 volumes, batch %lld, %d threads)\n",
              static_cast<long long>(o.size), static_cast<long long>(o.batch), num_threads());
  const auto start = std::chrono::steady_clock::now();
  double smoothed = 0;
  for (int it = 1; it <= o.iterations; ++it) {
    const Batch b = make_batch(o.batch, o.size, gen);
    const Tensor loss = cross_entropy(net.forward(b.image), b.label);
    loss.backward();
    sgd.step(net.params);
    const double value = loss.item<double>();
    smoothed = it == 1 ? value : 0.9 * smoothed + 0.1 * value;
    if (it % 10 == 0 || it == o.iterations) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("  iteration %4d/%d  loss %.4f  %.2f it/s\n", it, o.iterations, smoothed, it / seconds);
      std::fflush(stdout);
    }
  }
  Generator held_out(o.seed + 1000);
  const Batch test = make_batch(8, o.size, held_out);
  Tensor logits;
  {
    NoGradGuard no_grad;
    logits = net.forward(test.image);
  }
  const double dice = foreground_dice(logits, test.label);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("held-out Dice (8 volumes): %.4f   trained in %.1f s\n", dice, seconds);
  return dice >= 0.9 ? 0 : 1;
} catch (const vox::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 2;
}
