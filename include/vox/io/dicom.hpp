#pragma once
// DICOM: data sets (dicom_dataset.hpp), pixel data (dicom_pixels.hpp, dicom_codecs.hpp) and
// series assembled into oriented volumes (dicom_series.hpp).
#include "vox/io/dicom_dataset.hpp"
#include "vox/io/dicom_pixels.hpp"
#include "vox/io/dicom_series.hpp"
