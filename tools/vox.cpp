// The vox command-line program.
//   vox info PATH [--series UID] [--allow-uneven]
//                 what a NIfTI file, a DICOM file or a DICOM directory holds: size, type, geometry, values
//   vox convert IN OUT [--series UID] [--allow-uneven] [--orient CODE]
//                      [--spacing S | --spacing X,Y,Z [--labels | --interpolation linear|bspline|nnunet]]
//                      [--window PRESET | --window CENTER,WIDTH] [--nifti2]
//   vox synthetic DIR [--cases N] [--test N] [--size X,Y,Z] [--classes C] [--seed S]
//                 an MSD-layout dataset of synthetic sphere cases (NIfTI)
//   vox phantom OUT [--size N]    the 3-D Shepp-Logan phantom as NIfTI
//   vox preview IMAGE OUT.png [--label L] [--slices N]
//                 axial, coronal and sagittal slices of a NIfTI or DICOM image, the label over it
//   vox train [--config FILE.json] (--data DIR | --synthetic) [--task segment|classify] [--arch NAME]
//             [--run DIR] [--epochs N] [--iterations N] [--patch X,Y,Z] [--batch B] [--lr LR]
//             [--channels C1,C2,...] [--spacing S] [--no-augment] [--seed S] [--resume] [--init RUN]
//             [--device cpu|cuda:N] [--cuda-graph] [--amp bf16|f16]
//   vox infer --model RUN (or --arch monai-unet --weights W.safetensors --classes C) --input FILE_OR_DICOM
//             --output OUT.nii.gz [--overlap 0.5] [--sw-batch B] [--blend gaussian|constant] [--tta]
//             [--tta-axes A,B] [--png PREVIEW.png] [--logits]
//             [--no-window] [--largest-component] [--min-size N] [--device cpu|cuda:N]
//   vox quantize --model RUN --output RUN_INT8 (--calib DATA_DIR | --synthetic) [--method minmax|percentile|entropy]
//             [--cases N] [--keep-float K] [--no-sensitivity] [--threads T]
//                 INT8 post-training quantization, the float and INT8 Dice (or accuracy), a sensitivity report
//   vox prune --model RUN --output RUN_PRUNED (--data DATA_DIR | --synthetic) [--amount A] [--global] [--norm l1|l2]
//             [--finetune-epochs E] [--finetune-lr LR]
//                 structured channel pruning of a monai-unet or unet3d run, optionally fine-tuned
//   vox demo [--dir DIR] [--epochs N] [--iterations N] [--amp bf16|f16]   the main job on built-in data
//   vox bench [--model NAME] [--size S] [--batch B] [--mode train|infer] [--iters N] [--warmup N] [--device cpu|cuda:N]
//             [--graph]
//             [--threads T] [--channels C1,C2,...] [--classes C]
//                 a named model on random data: per-iteration times, the median, peak memory
//   vox evaluate --pred P --gt G [--classes C] [--csv]
//                 per-class Dice, HD95 and ASD (mm) of a predicted label map against the truth
// Bad input ends the program with status 1 and one line "vox: <what went wrong>".
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <vox/data/intensity.hpp>
#include <vox/data/resample.hpp>
#include <vox/data/resample_spline.hpp>
#include <vox/data/preview.hpp>
#include <vox/data/synthetic.hpp>
#include <vox/io/dicom.hpp>
#include <vox/io/json.hpp>
#include <vox/io/nifti.hpp>
#include <vox/train/metrics.hpp>

#include "cli_common.hpp"
#include "bench_command.hpp"
#include "infer_command.hpp"
#include "prune_command.hpp"

using namespace vox;

namespace {

const char* kUsage =
    "usage: vox <command> [options]\n"
    "  vox info PATH            size, type, spacing, orientation, affine and value range of a NIfTI file,\n"
    "                           a DICOM file, or a DICOM directory (its series, and the one read)\n"
    "  vox convert IN OUT       NIfTI or DICOM (file or directory) in, NIfTI out (.nii or .nii.gz by OUT's\n"
    "                           name), geometry preserved; CT comes out in Hounsfield units\n"
    "      --series UID         the DICOM series to read (default: the one with the most slices)\n"
    "      --allow-uneven       read a DICOM series with missing slices, uneven spacing or gantry tilt,\n"
    "                           stacked at its mean spacing, with a warning (default: an error)\n"
    "      --orient CODE        reorient first, e.g. RAS or LPS (nibabel's orientation codes)\n"
    "      --spacing S|X,Y,Z    resample to this voxel spacing in mm (trilinear; nearest with --labels)\n"
    "      --interpolation M    linear (default), bspline (cubic B-spline), or nnunet (spline in-plane,\n"
    "                           nearest across thick slices when the spacing is anisotropic)\n"
    "      --window W           apply a CT window, to [0, 1]: a preset (lung, mediastinum, abdomen, liver,\n"
    "                           bone, brain, subdural, stroke) or CENTER,WIDTH in HU\n"
    "      --nifti2             write NIfTI-2 instead of NIfTI-1\n"
    "  vox synthetic DIR        write a synthetic dataset (MSD layout: imagesTr, labelsTr, imagesTs, dataset.json)\n"
    "      --cases N --test N   training and test cases (default 8 and 2)\n"
    "      --size X,Y,Z         voxels per case (default 64,64,64); --classes C (default 2); --seed S\n"
    "  vox phantom OUT          the 3-D Shepp-Logan phantom, N^3 voxels (--size N, default 128)\n"
    "  vox preview IMAGE OUT.png  axial, coronal and sagittal slices as PNG; --label L draws a label\n"
    "                           map over them; --slices N per view (default 3)\n"
    "  vox train                train on an MSD-layout dataset (--data DIR) or on built-in synthetic data\n"
    "                           (--synthetic); writes a run directory (--run DIR, default runs/latest)\n"
    "      --task segment|classify   segmentation (label maps) or classification (dataset.json gives each\n"
    "                           image's class as a number, e.g. \"label\": 1); default segment\n"
    "      --arch NAME          monai-unet (default), attention-unet, unet3d, nnunet; resnet3d-10/18/34/50\n"
    "                           for classification (default resnet3d-18)\n"
    "      --epochs N --iterations N --patch X,Y,Z (the window; a classifier's input size, default 32)\n"
    "      --batch B --lr LR --channels C1,C2,... (widths per level) --spacing S (resample first)\n"
    "      --no-augment --seed S --threads T --resume (continue the run)\n"
    "      --init RUN           fine-tune: start from RUN's best weights and network (a pruned run's too)\n"
    "      --device cpu|cuda[:N] (train on a GPU; needs vox built with -DVOX_ENABLE_CUDA=ON)\n"
    "      --cuda-graph         with a GPU: after 3 iterations, replay the iteration from a CUDA graph\n"
    "      --amp bf16|f16       mixed precision: convolutions and matrix products in 16 bits under autocast,\n"
    "                           master weights, norms and losses in f32; f16 also scales the loss (the\n"
    "                           scale and skipped steps go to metrics.csv); default f32\n"
    "      --dist auto|mpi|nccl|none  data parallelism: under mpirun or srun (auto), each rank trains on its\n"
    "                           share of every batch and gradients are averaged over ranks (MPI; with\n"
    "                           --device cuda, NCCL, one GPU per rank, bootstrapped over MPI); --batch\n"
    "                           is the global batch, a multiple of the ranks; threads default to cores / ranks\n"
    "      --dist-timeout S     a collective unfinished after S seconds ends the job, naming it (default 600)\n"
    "      --config FILE.json   the same settings as JSON keys (data, synthetic, run, task, arch, channels,\n"
    "                           patch, spacing, epochs, iterations, batch, lr, val_fraction, augment, seed,\n"
    "                           threads, device, cuda_graph, amp, init, dist, dist_timeout); flags override\n"
    "                           it; each run keeps its own as RUN/train.json\n"
    "  vox infer                --model RUN --input FILE_OR_DICOM_DIR --output OUT.nii.gz\n"
    "      [--overlap 0.5] [--sw-batch 1] (windows per forward) [--blend gaussian|constant] (window weights,\n"
    "      gaussian with sigma = patch / 8 by default) [--tta] (all 8 flips) [--tta-axes 0,1] (the flips of\n"
    "      those axes only, i = 0, j = 1, k = 2) [--png PREVIEW.png] [--logits]\n"
    "      [--no-window] [--largest-component] (each class's largest connected part) [--min-size N] (drop smaller parts);\n"
    "      [--device cpu|cuda[:N]] (run the network on a GPU; windows are cut and blended on the CPU);\n"
    "      [--precision f32|bf16|f16] (run the network under autocast in 16 bits; default f32); an INT8 run\n"
    "      (vox quantize) runs in INT8 on the CPU by itself (--precision int8 says so and checks it);\n"
    "      a classifier's run prints the class and probabilities as JSON (and writes them to --output);\n"
    "      or --arch monai-unet --weights W.safetensors --classes C [--channels ...] [--patch ...]\n"
    "      for weights saved from a PyTorch/MONAI state_dict (fed nibabel's voxel order, not normalised\n"
    "      unless --normalize zscore)\n"
    "  vox quantize             INT8 post-training quantization of a segmentation or classifier run:\n"
    "      --model RUN --output RUN_INT8 (--calib DATA_DIR | --synthetic) [--method minmax|percentile|entropy]\n"
    "      [--cases 20] (calibration volumes, run as inference runs them) [--keep-float K]\n"
    "      (the K most sensitive layers stay in float) [--no-sensitivity] [--threads T]; prints the float\n"
    "      and INT8 validation Dice (a classifier's: accuracy; its batch norms folded into the convolutions);\n"
    "      writes RUN_INT8 (for vox infer), quantization.json, sensitivity.png\n"
    "  vox prune                structured channel pruning of a monai-unet or unet3d run: --model RUN\n"
    "      --output RUN_PRUNED (--data DATA_DIR | --synthetic) (the dataset: validation cases, and training\n"
    "      cases to fine-tune on) [--amount 0.3] [--global] (rank all layers' channels together) [--norm l1|l2]\n"
    "      [--finetune-epochs E] (train the pruned network E epochs, with the run's train.json settings)\n"
    "      [--finetune-lr LR] (default: a tenth of the run's) [--threads T]; prints parameters,\n"
    "      operations, time per window and Dice before and after; the pruned run goes to vox infer and\n"
    "      vox quantize\n"
    "  vox demo                 the main job: synthetic data, training, held-out inference and scores\n"
    "      [--dir DIR] [--epochs N] [--iterations N] [--lr LR] [--threads T] [--amp bf16|f16]\n"
    "  vox bench                time a model on random data (--model monai-unet, unet3d, resnet3d-18, ...)\n"
    "      --size S (cube side, default 96) --batch B (1) --mode train|infer (train: forward, DiceCE,\n"
    "      backward, Adam) --iters N (10) --warmup N (2) --threads T --channels C1,... --classes C (2);\n"
    "      --device cpu|cuda[:N] (cpu; cuda needs vox built with -DVOX_ENABLE_CUDA=ON); --graph (with\n"
    "      cuda: capture the iteration into a CUDA graph after the warm-up, and time its replays);\n"
    "      --precision f32|bf16|f16|int8 (autocast; train with f16 scales the loss; int8: --mode infer,\n"
    "      calibrated on the random input, every convolution in INT8); under mpirun (--dist auto|mpi|none):\n"
    "      each rank trains on --batch, gradients averaged over ranks, and the allreduce time per step,\n"
    "      and how much of it backward hides, are printed;\n"
    "      prints the median and last ms_per_iter=<median>, with peak_rss_mib (and peak_gpu_mib) before it\n"
    "  vox evaluate --pred P --gt G   per-class Dice, 95th-percentile Hausdorff and average surface\n"
    "                           distance (mm) as JSON (--csv: CSV); --classes C (default: from the labels)\n";

void print_geometry(const io::Image& im) {
  std::cout << "spacing:     " << format_number(im.spacing[0]) << " x " << format_number(im.spacing[1]) << " x "
            << format_number(im.spacing[2]) << " mm\n";
  std::cout << "orientation: " << im.orientation_code() << "\n";
}

void print_affine(const io::Image& im) {
  const io::Affine a = im.affine(io::Convention::ras);
  std::cout << "affine (RAS):\n";
  for (const auto& row : a)
    std::cout << "  [" << format_number(row[0]) << ", " << format_number(row[1]) << ", " << format_number(row[2]) << ", "
              << format_number(row[3]) << "]\n";
}

void print_range(const io::Image& im) {
  const std::vector<double> v = im.voxels.to_vector<double>();
  double lo = INFINITY, hi = -INFINITY;
  int64_t nans = 0;
  for (double e : v) {
    if (std::isnan(e)) ++nans;
    else lo = std::min(lo, e), hi = std::max(hi, e);
  }
  std::cout << "range:       " << format_number(lo) << " .. " << format_number(hi);
  if (nans) std::cout << " (" << nans << " NaN)";
  std::cout << "\n";
}

int dicom_info(const std::string& path, const InputOptions& options) {
  const io::DicomVolume d = read_dicom_reporting(path, options);
  const io::Image& im = d.image;
  std::cout << "file:        " << path << "\n";
  if (d.series.size() > 1) {
    std::cout << "series:      " << d.series.size() << " in this directory (--series UID picks one):\n";
    for (const auto& s : d.series)
      std::cout << "  " << (s.uid == d.series_uid ? "* " : "  ") << s.uid << "  " << s.paths.size() << " files, " << s.modality << ", "
                << s.rows << " x " << s.columns << (s.description.empty() ? "" : ", \"" + s.description + "\"") << "\n";
  }
  std::cout << "format:      DICOM, " << d.transfer_syntax << "\n";
  std::cout << "series uid:  " << d.series_uid << (d.description.empty() ? "" : " (\"" + d.description + "\")") << "\n";
  std::cout << "modality:    " << (d.modality.empty() ? "(none)" : d.modality) << ", " << d.photometric << "\n";
  std::cout << "dims:        " << im.width() << " x " << im.height() << " x " << im.depth() << " (i x j x k)";
  if (im.channels() > 1) std::cout << ", " << im.channels() << " samples";
  std::cout << ", " << d.slices << (d.slices == 1 ? " slice\n" : " slices\n");
  std::cout << "dtype:       " << dtype_name(im.voxels.dtype()) << "\n";
  print_geometry(im);
  if (!d.rescale.identity())
    std::cout << "rescale:     slope " << format_number(d.rescale.slope) << ", intercept " << format_number(d.rescale.intercept)
              << (d.modality == "CT" ? " (values in HU)" : "") << "\n";
  if (d.window.present())
    std::cout << "window:      center " << format_number(d.window.center) << ", width " << format_number(d.window.width) << "\n";
  print_affine(im);
  print_range(im);
  for (const std::string& w : d.warnings) std::cout << "warning:     " << w << "\n";
  return 0;
}

int info(const std::vector<std::string>& args) {
  InputOptions options;
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    if (options.take(args, i)) continue;
    if (!args[i].empty() && args[i][0] == '-') throw UsageError{"unknown option " + args[i]};
    positional.push_back(args[i]);
  }
  if (positional.size() != 1) throw UsageError{"info takes one PATH"};
  const std::string& path = positional[0];
  if (!is_nifti_path(path)) return dicom_info(path, options);
  const io::NiftiImage n = io::read_nifti(path);
  const io::Image& im = n.image;
  const bool gz = io::nifti_detail::has_suffix(path, ".gz");
  const bool pair = io::nifti_detail::has_suffix(path, ".hdr") || io::nifti_detail::has_suffix(path, ".img") ||
                    io::nifti_detail::has_suffix(path, ".hdr.gz") || io::nifti_detail::has_suffix(path, ".img.gz");
  std::cout << "file:        " << path << "\n";
  std::cout << "format:      NIfTI-" << n.info.version << (pair ? " (.hdr/.img pair" : " (single file") << (gz ? ", gzip)" : ")")
            << ", " << (n.info.big_endian ? "big" : "little") << "-endian\n";
  std::cout << "dims:        " << im.width() << " x " << im.height() << " x " << im.depth() << " (i x j x k)";
  if (im.channels() > 1) std::cout << ", " << im.channels() << " volumes";
  std::cout << "\n";
  std::cout << "dtype:       NIfTI datatype " << n.info.datatype << ", read as " << dtype_name(im.voxels.dtype()) << "\n";
  print_geometry(im);
  std::cout << "geometry:    " << (n.info.sform_code > 0 ? "sform" : n.info.qform_code > 0 ? "qform" : "none (nibabel's default)")
            << " (qform_code " << n.info.qform_code << ", sform_code " << n.info.sform_code << ")\n";
  print_affine(im);
  if (n.info.scl_slope != 0 && std::isfinite(n.info.scl_slope) && (n.info.scl_slope != 1 || n.info.scl_inter != 0))
    std::cout << "scaling:     slope " << format_number(n.info.scl_slope) << ", inter " << format_number(n.info.scl_inter) << "\n";
  print_range(im);
  if (!n.info.description.empty()) std::cout << "description: " << n.info.description << "\n";
  return 0;
}

int convert(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  InputOptions input;
  std::string orient, window, spacing;
  bool labels = false;
  std::string interpolation = "linear";
  int version = 1;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (input.take(args, i)) continue;
    if (a == "--orient") orient = value();
    else if (a == "--window") window = value();
    else if (a == "--spacing") spacing = value();
    else if (a == "--labels") labels = true;
    else if (a == "--interpolation") interpolation = value();
    else if (a == "--nifti2") version = 2;
    else if (!a.empty() && a[0] == '-') throw UsageError{"unknown option " + a};
    else positional.push_back(a);
  }
  if (positional.size() != 2) throw UsageError{"convert takes IN and OUT"};
  io::Image image = read_image(positional[0], input);
  if (!orient.empty()) image = io::reorient(image, orient);
  if (!spacing.empty()) {
    std::vector<double> mm;
    try {
      for (size_t start = 0; start <= spacing.size();) {
        const size_t comma = std::min(spacing.find(',', start), spacing.size());
        mm.push_back(std::stod(spacing.substr(start, comma - start)));
        start = comma + 1;
      }
    } catch (const std::exception&) {
      throw UsageError{"--spacing takes S or X,Y,Z in mm, got " + spacing};
    }
    if (mm.size() == 1) mm = {mm[0], mm[0], mm[0]};
    if (mm.size() != 3) throw UsageError{"--spacing takes S or X,Y,Z in mm, got " + spacing};
    const std::array<double, 3> target{mm[0], mm[1], mm[2]};
    if (labels) image = data::resample_to_spacing(image, target, data::Interpolation::nearest);
    else if (interpolation == "linear") image = data::resample_to_spacing(image, target, data::Interpolation::linear);
    else if (interpolation == "bspline") image = data::resample_bspline(image, target);
    else if (interpolation == "nnunet") image = data::resample_nnunet(image, target, false);
    else throw UsageError{"--interpolation takes linear, bspline or nnunet, got " + interpolation};
  }
  if (!window.empty()) {
    data::Window w;
    const size_t comma = window.find(',');
    if (comma == std::string::npos) {
      w = data::window_preset(window);
    } else {
      try {
        w = {std::stod(window.substr(0, comma)), std::stod(window.substr(comma + 1))};
      } catch (const std::exception&) {
        throw UsageError{"--window takes a preset name or CENTER,WIDTH, got " + window};
      }
    }
    image.voxels = data::apply_window(image.voxels, w);
  }
  io::write_nifti(positional[1], image, version);
  std::cout << "wrote " << positional[1] << ": " << image.width() << " x " << image.height() << " x " << image.depth() << ", "
            << image.orientation_code() << ", " << dtype_name(image.voxels.dtype()) << "\n";
  return 0;
}

int synthetic(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  int64_t cases = 8, test = 2;
  uint64_t seed = 0;
  data::SphereOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--cases") cases = parse_count(value(), a);
    else if (a == "--test") test = parse_count(value(), a);
    else if (a == "--seed") seed = static_cast<uint64_t>(parse_count(value(), a));
    else if (a == "--classes") o.classes = parse_count(value(), a);
    else if (a == "--size") {
      const auto s = parse_sizes(value(), a);
      o.size = {s[0], s[1], s[2]};
    } else if (!a.empty() && a[0] == '-') throw UsageError{"unknown option " + a};
    else positional.push_back(a);
  }
  if (positional.size() != 1) throw UsageError{"synthetic takes one DIR"};
  if (cases < 1) throw UsageError{"--cases must be at least 1"};
  std::cerr << "vox: writing " << cases << " training and " << test << " test cases of " << o.size[0] << "x" << o.size[1] << "x"
            << o.size[2] << " voxels to " << positional[0] << "\n";
  data::write_synthetic_dataset(positional[0], cases, test, o, seed);
  std::cout << "wrote " << positional[0] << "/dataset.json, imagesTr, labelsTr, imagesTs\n";
  return 0;
}

int phantom(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  int64_t size = 128;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--size") {
      if (i + 1 >= args.size()) throw UsageError{"--size needs a value"};
      size = parse_count(args[++i], "--size");
    } else if (!args[i].empty() && args[i][0] == '-') {
      throw UsageError{"unknown option " + args[i]};
    } else {
      positional.push_back(args[i]);
    }
  }
  if (positional.size() != 1) throw UsageError{"phantom takes one OUT path"};
  const io::Image p = data::shepp_logan({size, size, size});
  io::write_nifti(positional[0], p);
  std::cout << "wrote " << positional[0] << ": Shepp-Logan phantom, " << size << "^3 voxels\n";
  return 0;
}

int preview(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  InputOptions input;
  std::string label_path;
  data::PreviewOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    if (input.take(args, i)) continue;
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--label") label_path = value();
    else if (a == "--slices") o.slices = parse_count(value(), a);
    else if (!a.empty() && a[0] == '-') throw UsageError{"unknown option " + a};
    else positional.push_back(a);
  }
  if (positional.size() != 2) throw UsageError{"preview takes IMAGE and OUT.png"};
  if (o.slices < 1) throw UsageError{"--slices must be at least 1"};
  const io::Image image = read_image(positional[0], input);
  io::Image label;
  if (!label_path.empty()) label = read_image(label_path, input);
  data::write_preview_png(positional[1], image, label_path.empty() ? nullptr : &label, o);
  std::cout << "wrote " << positional[1] << "\n";
  return 0;
}

int evaluate(const std::vector<std::string>& args) {
  std::string pred, gt;
  int64_t classes = 0;
  bool csv = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--pred") pred = value();
    else if (a == "--gt") gt = value();
    else if (a == "--classes") classes = parse_count(value(), a);
    else if (a == "--csv") csv = true;
    else throw UsageError{"unknown argument " + a};
  }
  if (pred.empty() || gt.empty()) throw UsageError{"evaluate needs --pred and --gt"};
  const io::Image p = io::read_nifti(pred).image, t = io::read_nifti(gt).image;
  if (p.voxels.shape() != t.voxels.shape())
    fail("evaluate", pred, " is ", p.width(), "x", p.height(), "x", p.depth(), " but ", gt, " is ", t.width(), "x", t.height(), "x", t.depth());
  for (int a = 0; a < 3; ++a)
    if (std::abs(p.spacing[a] - t.spacing[a]) > 1e-3 * t.spacing[a])
      fail("evaluate", "spacing differs between ", pred, " and ", gt, " along axis ", a, " (", p.spacing[a], " vs ", t.spacing[a], ")");
  const Tensor pl = p.voxels.to(DType::i64), tl = t.voxels.to(DType::i64);
  if (classes == 0) {
    for (const Tensor* l : {&pl, &tl})
      for (int64_t v : l->to_vector<int64_t>()) classes = std::max(classes, v + 1);
    classes = std::max<int64_t>(classes, 2);
  }
  const auto dice = metrics::dice_per_class(pl, tl, classes);
  const auto hd95 = metrics::hausdorff_distance(pl, tl, classes, t.spacing, 95);
  const auto asd = metrics::average_surface_distance(pl, tl, classes, t.spacing);
  if (csv) {
    std::cout << "class,dice,hd95_mm,asd_mm\n";
    for (int64_t c = 1; c < classes; ++c)
      std::cout << c << "," << json_number(dice[static_cast<size_t>(c)]) << "," << json_number(hd95[static_cast<size_t>(c)]) << ","
                << json_number(asd[static_cast<size_t>(c)]) << "\n";
    return 0;
  }
  std::vector<double> fg(dice.begin() + 1, dice.end());
  std::cout << "{\n  \"prediction\": " << json::quote(pred) << ",\n  \"truth\": " << json::quote(gt) << ",\n  \"classes\": [\n";
  for (int64_t c = 1; c < classes; ++c)
    std::cout << "    {\"class\": " << c << ", \"dice\": " << json_number(dice[static_cast<size_t>(c)]) << ", \"hd95_mm\": "
              << json_number(hd95[static_cast<size_t>(c)]) << ", \"asd_mm\": " << json_number(asd[static_cast<size_t>(c)]) << "}"
              << (c + 1 < classes ? "," : "") << "\n";
  std::cout << "  ],\n  \"mean_dice\": " << json_number(metrics::mean_ignoring_nan(fg))
            << ",\n  \"note\": \"classes absent from the truth have null Dice and are left out of the mean (MONAI's ignore_empty)\"\n}\n";
  return 0;
}

// Options `train` and `infer` share: the model and its input grid.
bool take_model_option(const std::vector<std::string>& args, size_t& i, run_commands::RunConfig& c) {
  const std::string& a = args[i];
  auto value = [&]() -> const std::string& {
    if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
    return args[++i];
  };
  if (a == "--arch") c.arch = value();
  else if (a == "--channels") {
    c.channels = parse_list(value(), a);
    if (c.channels.size() < 2) throw UsageError{"--channels needs at least two levels"};
  } else if (a == "--patch") {
    const auto p = parse_sizes(value(), a);
    c.patch = {p[0], p[1], p[2]};
  } else if (a == "--spacing") {
    const double v = parse_real(value(), a);
    if (!(v > 0)) throw UsageError{"--spacing must be positive"};
    c.spacing = {v, v, v};
  } else if (a == "--classes") c.classes = parse_count(value(), a);
  else if (a == "--task") c.task = value();
  else return false;
  return true;
}

int train_command(const std::vector<std::string>& args) {
  run_commands::TrainArgs t;
  // a JSON config first, so that the flags override it wherever they stand
  for (size_t i = 0; i < args.size(); ++i)
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) throw UsageError{"--config needs a JSON file"};
      t.apply_json(args[i + 1]);
    }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--arch") t.arch_given = true;
    if (a == "--patch") t.patch_given = true;
    if (a == "--classes") t.classes_given = true;
    if (take_model_option(args, i, t.config)) continue;
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--config") ++i;
    else if (a == "--data") t.data = value();
    else if (a == "--synthetic") t.synthetic = true;
    else if (a == "--run") t.run = value();
    else if (a == "--epochs") t.epochs = parse_count(value(), a);
    else if (a == "--iterations") t.iterations = parse_count(value(), a);
    else if (a == "--batch") t.batch = parse_count(value(), a);
    else if (a == "--threads") t.threads = parse_count(value(), a);
    else if (a == "--seed") t.seed = static_cast<uint64_t>(parse_count(value(), a));
    else if (a == "--lr") t.lr = parse_real(value(), a);
    else if (a == "--no-augment") t.augment = false;
    else if (a == "--resume") t.resume = true;
    else if (a == "--init") t.init = value();
    else if (a == "--dist") t.dist = value();
    else if (a == "--dist-timeout") t.dist_timeout = parse_real(value(), a);
    else if (a == "--device") t.device = value();
    else if (a == "--cuda-graph") t.cuda_graph = true;
    else if (a == "--amp") t.amp = value();
    else throw UsageError{"unknown option " + a};
  }
  run_commands::train_run(t);
  return 0;
}

int infer(const std::vector<std::string>& args) {
  run_commands::InferArgs f;
  InputOptions input;
  std::vector<std::string> model_options;  // --arch, --patch, ... as given, in order
  for (size_t i = 0; i < args.size(); ++i) {
    if (input.take(args, i)) continue;
    const std::string flag = args[i];
    if (take_model_option(args, i, f.config)) {
      model_options.push_back(flag);
      continue;
    }
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--model") f.model = value();
    else if (a == "--weights") f.weights = value();
    else if (a == "--input") f.input = value();
    else if (a == "--output") f.output = value();
    else if (a == "--png") f.png = value();
    else if (a == "--overlap") f.overlap = parse_real(value(), a);
    else if (a == "--sw-batch") f.windows_per_batch = parse_count(value(), a);
    else if (a == "--tta") f.tta = true;
    else if (a == "--tta-axes") {
      f.tta = true;
      f.tta_axes.clear();
      for (int64_t axis : parse_list(value(), a)) {
        if (axis > 2) throw UsageError{"--tta-axes takes axes 0, 1 and 2 (i, j, k), got " + std::to_string(axis)};
        f.tta_axes.push_back(static_cast<int>(axis));
      }
    } else if (a == "--blend") {
      const std::string mode = value();
      if (mode != "gaussian" && mode != "constant") throw UsageError{"--blend takes gaussian or constant, got " + mode};
      f.gaussian = mode == "gaussian";
    }
    else if (a == "--logits") f.logits = true;
    else if (a == "--no-window") f.no_window = true;
    else if (a == "--largest-component") f.largest_component = true;
    else if (a == "--min-size") f.min_size = parse_count(value(), a);
    else if (a == "--device") f.device = value();
    else if (a == "--precision") f.precision = value();
    else if (a == "--normalize") {
      f.normalization = value();
      if (f.normalization != "zscore" && f.normalization != "none") throw UsageError{"--normalize takes zscore or none"};
    } else throw UsageError{"unknown option " + a};
  }
  if (f.model.empty() == f.weights.empty()) throw UsageError{"infer needs --model RUN, or --weights W.safetensors with --arch and --classes"};
  // A run fixes its network and its input grid; only how the windows are cut may change.
  if (!f.model.empty())
    for (const std::string& flag : model_options) {
      if (flag == "--patch") f.patch = f.config.patch;
      else
        throw UsageError{flag + " cannot change at inference: the run " + f.model +
                         " fixes it (config.json); with --model only --patch, --overlap and --sw-batch may differ"};
    }
  (void)usable_device(f.device);  // refused before anything is read
  if (f.precision != "int8") (void)parse_precision(f.precision, "--precision");
  if (f.input.empty()) throw UsageError{"infer needs --input"};
  const bool classify = f.weights.empty() ? run_commands::RunConfig::load(f.model).task == "classify" : f.config.task == "classify";
  if (f.output.empty() && !classify) throw UsageError{"infer needs --output OUT.nii.gz"};
  if (!(f.overlap >= 0 && f.overlap < 1)) throw UsageError{"--overlap must be in [0, 1)"};
  if (f.windows_per_batch < 1) throw UsageError{"--sw-batch must be at least 1"};
  if (f.logits && (f.largest_component || f.min_size > 0)) throw UsageError{"post-processing (--largest-component, --min-size) needs labels, not --logits"};
  run_commands::infer_one(f, input);
  if (!classify) std::cout << "wrote " << f.output << (f.png.empty() ? "" : " and " + f.png) << "\n";
  return 0;
}

int bench(const std::vector<std::string>& args) {
  bench_command::BenchArgs b;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--model") b.model = value();
    else if (a == "--size") b.size = parse_count(value(), a);
    else if (a == "--batch") b.batch = parse_count(value(), a);
    else if (a == "--mode") b.mode = value();
    else if (a == "--iters") b.iterations = parse_count(value(), a);
    else if (a == "--warmup") b.warmup = parse_count(value(), a);
    else if (a == "--threads") b.threads = parse_count(value(), a);
    else if (a == "--classes") b.classes = parse_count(value(), a);
    else if (a == "--channels") b.channels = parse_list(value(), a);
    else if (a == "--device") b.device = value();
    else if (a == "--graph") b.graph = true;
    else if (a == "--dist") b.dist = value();
    else if (a == "--precision") {
      const std::string p = value();
      if (p == "int8") b.int8 = true;
      else b.precision = parse_precision(p, a);
    } else throw UsageError{"unknown option " + a};
  }
  return bench_command::run(b);
}

int quantize(const std::vector<std::string>& args) {
  run_commands::QuantizeArgs q;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--model") q.model = value();
    else if (a == "--output") q.output = value();
    else if (a == "--calib") q.calib = value();
    else if (a == "--synthetic") q.synthetic = true;
    else if (a == "--method") q.method = value();
    else if (a == "--cases") q.cases = parse_count(value(), a);
    else if (a == "--keep-float") q.keep_float = parse_count(value(), a);
    else if (a == "--no-sensitivity") q.sensitivity = false;
    else if (a == "--threads") q.threads = parse_count(value(), a);
    else throw UsageError{"unknown option " + a};
  }
  return run_commands::quantize_run(q);
}

int prune(const std::vector<std::string>& args) {
  run_commands::PruneArgs p;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--model") p.model = value();
    else if (a == "--output") p.output = value();
    else if (a == "--data") p.data = value();
    else if (a == "--synthetic") p.synthetic = true;
    else if (a == "--amount") p.amount = parse_real(value(), a);
    else if (a == "--global") p.global = true;
    else if (a == "--norm") p.norm = value();
    else if (a == "--finetune-epochs") p.finetune_epochs = parse_count(value(), a);
    else if (a == "--finetune-lr") p.finetune_lr = parse_real(value(), a);
    else if (a == "--threads") p.threads = parse_count(value(), a);
    else throw UsageError{"unknown option " + a};
  }
  return run_commands::prune_run(p);
}

// The main job: synthetic data, training with augmentation, held-out inference and scores.
int demo(const std::vector<std::string>& args) {
  std::string dir = "vox-demo";
  run_commands::TrainArgs t;
  t.epochs = 10, t.iterations = 50, t.lr = 2e-3, t.config.patch = {48, 48, 48};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw UsageError{a + " needs a value"};
      return args[++i];
    };
    if (a == "--dir") dir = value();
    else if (a == "--epochs") t.epochs = parse_count(value(), a);
    else if (a == "--iterations") t.iterations = parse_count(value(), a);
    else if (a == "--threads") t.threads = parse_count(value(), a);
    else if (a == "--lr") t.lr = parse_real(value(), a);
    else if (a == "--amp") t.amp = value();
    else throw UsageError{"unknown option " + a};
  }
  (void)parse_precision(t.amp, "--amp");
  const auto start = std::chrono::steady_clock::now();
  t.data = dir + "/data";
  t.run = dir + "/run";
  std::filesystem::create_directories(dir);
  if (!std::filesystem::exists(t.data + "/dataset.json")) {
    std::cout << "vox demo: writing 16 synthetic cases (12 to train and validate on, 4 held out) to " << t.data << "\n";
    data::write_synthetic_dataset(t.data, 12, 4, {.size = {64, 64, 64}}, 1);
  }
  run_commands::train_run(t);
  // held-out cases: predictions, previews, scores
  const data::MsdDataset d = data::load_msd_dataset(t.data);
  std::filesystem::create_directories(dir + "/predictions");
  std::vector<double> dice;
  for (const data::DatasetCase& c : d.test) {
    run_commands::InferArgs f;
    f.model = t.run, f.input = c.image, f.precision = t.amp;  // held-out inference in the precision it trained in
    f.output = dir + "/predictions/" + c.id + ".nii.gz";
    f.png = dir + "/predictions/" + c.id + ".png";
    const Tensor labels = run_commands::infer_one(f, {});
    const std::string truth = t.data + "/labelsTs/" + c.id + ".nii.gz";
    dice.push_back(run_commands::mean_foreground_dice(labels, io::read_nifti(truth).image.voxels, d.classes()));
    std::printf("  %s: Dice %.4f\n", c.id.c_str(), dice.back());
  }
  const double mean = metrics::mean_ignoring_nan(dice);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  io::write_file_atomically(dir + "/summary.json", [&](std::ofstream& out) {
    out << "{\"held_out_cases\": " << dice.size() << ", \"mean_dice\": " << json_number(mean) << ", \"seconds\": " << json_number(seconds) << "}\n";
  });
  std::printf("vox demo: mean Dice on %zu held-out volumes %.4f (target 0.90) in %.0f s; predictions and previews in %s/predictions, curves in %s\n",
              dice.size(), mean, seconds, dir.c_str(), t.run.c_str());
  return mean >= 0.9 ? 0 : 1;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  try {
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    if (args[0] == "info") return info(rest);
    if (args[0] == "convert") return convert(rest);
    if (args[0] == "synthetic") return synthetic(rest);
    if (args[0] == "phantom") return phantom(rest);
    if (args[0] == "evaluate") return evaluate(rest);
    if (args[0] == "preview") return preview(rest);
    if (args[0] == "train") return train_command(rest);
    if (args[0] == "infer") return infer(rest);
    if (args[0] == "quantize") return quantize(rest);
    if (args[0] == "prune") return prune(rest);
    if (args[0] == "demo") return demo(rest);
    if (args[0] == "bench") return bench(rest);
    throw UsageError{"unknown command \"" + args[0] + "\""};
  } catch (const UsageError& e) {
    std::cerr << "vox: " << e.message << " (vox --help lists the commands and options)\n";
    return 2;
  } catch (const Error& e) {
    std::cerr << "vox: " << one_line(e.what()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "vox: " << one_line(e.what()) << "\n";
    return 1;
  }
}
