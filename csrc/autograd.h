// The C++ types of the autograd nodes (autograd.cpp), which the Python module names
// (csrc/python/module.cpp) so that a grad_fn prints as <RnnBackward>.
#pragma once

#include <typeinfo>

#include "library_api.h"

namespace fastrnn {

FASTRNN_API const std::type_info& rnn_backward_node_type();
FASTRNN_API const std::type_info& rnn_cell_backward_node_type();

}  // namespace fastrnn
