/* The model page: predict as the form changes, and predict a whole CSV file.
 *
 * Plain JavaScript, no framework, no build step. Every prediction goes through
 * the JSON API that programs call; this file only draws the answers.
 */
(function () {
  "use strict";

  var DEBOUNCE_MS = 250;
  var PREVIEW_ROWS = 20;
  var ERRORS_SHOWN = 50;

  var form = document.getElementById("predict-form");
  if (!form) {
    return;
  }
  var modelName = form.dataset.model;
  var task = form.dataset.task;
  var predictUrl = form.dataset.predictUrl;
  var fields = Array.prototype.slice.call(form.querySelectorAll(".field"));

  // The elements the script draws in (their ids are in pages/model.html).
  var result = document.getElementById("result");
  var resultStatus = document.getElementById("result-status");
  var resultLabel = document.getElementById("result-label"); // absent for a model with several targets
  var resultTargets = document.getElementById("result-targets");
  var resultScore = document.getElementById("result-score");
  var resultMeta = document.getElementById("result-meta");
  var bars = document.getElementById("bars");
  var formError = document.getElementById("form-error");
  var copyButton = document.getElementById("copy-curl");
  var copyStatus = document.getElementById("copy-status");
  var curlText = document.getElementById("curl");
  var csvForm = document.getElementById("csv-form");
  var csvFile = document.getElementById("csv-file");
  var csvTemplate = document.getElementById("csv-template");
  var csvStatus = document.getElementById("csv-status");
  var csvDownload = document.getElementById("csv-download");
  var csvErrors = document.getElementById("csv-errors");
  var csvErrorList = document.getElementById("csv-error-list");
  var csvPreview = document.getElementById("csv-preview");
  var csvUrl = csvForm.dataset.csvUrl;

  // --- Small helpers ---------------------------------------------------------------

  /* Shows TEXT in ELEMENT; a null TEXT empties ELEMENT and hides it. */
  function showText(element, text) {
    element.textContent = text === null ? "" : text;
    element.hidden = text === null;
  }

  /* Whether TEXT (a number box's value, a CSV cell) reads as a finite number. */
  function isNumeric(text) {
    return text !== "" && Number.isFinite(Number(text));
  }

  function percent(share) {
    return (share * 100).toFixed(1) + "%";
  }

  function plural(count, word) {
    return word + (count === 1 ? "" : "s");
  }

  /* The options of a POST of BODY (SIGNAL, if given, can abort it). */
  function postOptions(contentType, body, signal) {
    var headers = { "Content-Type": contentType };
    // With API keys on, the page has a field for the key (never stored).
    var key = document.getElementById("api-key");
    if (key && key.value.trim()) {
      headers["X-API-Key"] = key.value.trim();
    }
    return { method: "POST", headers: headers, body: body, signal: signal };
  }

  // --- Problems the API answers with (application/problem+json) --------------------

  function errorsOf(problem) {
    return (problem && problem.errors) || {};
  }

  function answeredText(status) {
    return "The service answered " + status + ".";
  }

  /* "_row" and "_body" are faults of the whole row or body, not of a field. */
  function isWhole(key) {
    return key.charAt(0) === "_";
  }

  /* MESSAGE, after the field KEY it is about. */
  function keyed(key, message) {
    return (isWhole(key) ? "" : key + ": ") + message;
  }

  /* The messages of an `errors` value (a text, a list or an object of them) as one text. */
  function messages(value) {
    if (Array.isArray(value)) {
      return value.map(messages).join(" ");
    }
    if (value && typeof value === "object") {
      return Object.keys(value)
        .map(function (key) {
          return keyed(key, messages(value[key]));
        })
        .join("; ");
    }
    return String(value);
  }

  // --- Reading the form ----------------------------------------------------------

  function control(field) {
    return field.querySelector("[data-feature]");
  }

  function valueOf(field) {
    var input = control(field);
    var type = field.dataset.type;
    if (field.dataset.nullable === "true" && input.value.trim() === "") {
      return null; // a missing value, which this feature accepts
    }
    if (type === "bool") {
      return input.type === "checkbox" ? input.checked : input.value === "true";
    }
    if (type === "category") {
      return input.value;
    }
    // A number box the browser cannot read (empty, or not a number) is sent as
    // null, so that the API's own message says what is wrong with it.
    var raw = input.value.trim();
    if (raw === "") {
      return null;
    }
    var number = Number(raw);
    return Number.isFinite(number) ? number : raw;
  }

  function currentRow() {
    var row = {};
    fields.forEach(function (field) {
      row[field.dataset.name] = valueOf(field);
    });
    return row;
  }

  // --- Sliders and number boxes move together -------------------------------------

  /* Calls CALLBACK with each slider and the number box it moves with. */
  function eachSlider(callback) {
    form.querySelectorAll("input[type=range][data-slider-for]").forEach(function (slider) {
      callback(slider, document.getElementById(slider.dataset.sliderFor));
    });
  }

  eachSlider(function (slider, box) {
    slider.addEventListener("input", function () {
      box.value = slider.value;
    });
    box.addEventListener("input", function () {
      if (isNumeric(box.value)) {
        slider.value = box.value; // the browser keeps the slider within its range
      }
    });
  });

  function syncSliders() {
    eachSlider(function (slider, box) {
      if (box.value !== "") {
        slider.value = box.value;
      }
    });
  }

  // --- Predicting ---------------------------------------------------------------

  var timer = null;
  var sequence = 0;
  var inFlight = null;
  var lastSent = null;

  function requestBody() {
    return JSON.stringify({ features: currentRow() });
  }

  function schedule() {
    window.clearTimeout(timer);
    if (requestBody() === lastSent) {
      // Nothing changed (a "change" after its "input", a blur): the answer shown stands.
      return;
    }
    result.classList.add("is-pending");
    timer = window.setTimeout(predict, DEBOUNCE_MS);
  }

  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  // A key typed (with API keys on) asks again for the row the service refused without it.
  var keyInput = document.getElementById("api-key");
  if (keyInput) {
    keyInput.addEventListener("input", function () {
      lastSent = null;
      schedule();
    });
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    predict();
  });
  form.addEventListener("reset", function () {
    // The browser restores the values after this event: read them on the next turn.
    window.setTimeout(function () {
      syncSliders();
      predict();
    }, 0);
  });

  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function curlFor(url, body) {
    var lines = [
      "curl -s " + shellQuote(window.location.origin + url),
      "-H " + shellQuote("Content-Type: application/json"),
    ];
    if (document.getElementById("api-key")) {
      // The key itself stays out of the text: the shell fills it in.
      lines.push('-H "X-API-Key: $API_KEY"');
    }
    lines.push("-d " + shellQuote(body));
    return lines.join(" \\\n  ");
  }

  function predict() {
    window.clearTimeout(timer); // this prediction replaces any scheduled one
    var mine = ++sequence;
    if (inFlight) {
      inFlight.abort();
    }
    inFlight = new AbortController();
    var body = requestBody();
    lastSent = body;
    curlText.textContent = curlFor(predictUrl, body);
    copyButton.disabled = false;
    result.classList.add("is-pending");
    resultStatus.textContent = "Predicting…";
    var started = performance.now();
    fetch(predictUrl, postOptions("application/json", body, inFlight.signal))
      .then(function (response) {
        return response.json().then(function (answer) {
          if (mine !== sequence) {
            return; // a newer request has been sent since
          }
          var elapsed = performance.now() - started;
          if (response.ok) {
            showAnswer(answer, elapsed, response.headers.get("X-Process-Time"));
          } else {
            showProblem(answer, response.status);
          }
        });
      })
      .catch(function (error) {
        if (error.name === "AbortError" || mine !== sequence) {
          return;
        }
        lastSent = null; // the same row may be tried again
        showFailure("The service did not answer: " + error.message);
      });
  }

  // --- Drawing answers -----------------------------------------------------------

  function formatNumber(value) {
    if (typeof value !== "number") {
      return String(value);
    }
    return Number(value.toPrecision(6)).toLocaleString("en", { maximumFractionDigits: 6 });
  }

  /* One predicted value as a person reads it: a class or number, an outlier or not, a cluster. */
  function valueText(value) {
    if (task === "outlier_detection") {
      return value === -1 ? "Outlier" : "Inlier";
    }
    if (task === "clustering") {
      return "Cluster " + value;
    }
    return formatNumber(value);
  }

  function formatMs(ms) {
    return ms < 10 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
  }

  /* Shows MESSAGE under the control of FIELD and marks it invalid; a null MESSAGE clears both. */
  function showFieldError(field, message) {
    var invalid = message !== null;
    showText(field.querySelector(".field-error"), message);
    if (invalid) {
      control(field).setAttribute("aria-invalid", "true");
    } else {
      control(field).removeAttribute("aria-invalid");
    }
    field.classList.toggle("has-error", invalid);
  }

  function clearErrors() {
    fields.forEach(function (field) {
      showFieldError(field, null);
      showText(field.querySelector(".field-warning"), null);
    });
    showText(formError, null);
  }

  /* Values the model was given although it saw none like them: a note under each field. */
  function showWarnings(warnings) {
    Object.keys(warnings || {}).forEach(function (name) {
      var field = fields.find(function (candidate) {
        return candidate.dataset.name === name;
      });
      if (field) {
        showText(field.querySelector(".field-warning"), messages(warnings[name]));
      }
    });
  }

  /* The answer has come: the result is no longer pending but STATE ("is-stale", "is-failed"). */
  function settle(state) {
    result.classList.remove("is-pending");
    result.classList.add(state);
  }

  function showAnswer(answer, elapsed, serverSeconds) {
    clearErrors();
    showWarnings(answer.warnings);
    result.classList.remove("is-pending", "is-stale", "is-failed");
    resultStatus.textContent = modelName + " predicts";
    var prediction = answer.prediction;
    if (resultLabel) {
      resultLabel.textContent = valueText(prediction);
      resultLabel.title = String(prediction);
    }
    if (resultTargets) {
      resultTargets.querySelectorAll("[data-target]").forEach(function (value) {
        var predicted = prediction[value.dataset.target];
        value.textContent = valueText(predicted);
        value.title = String(predicted);
      });
    }
    if (resultScore && typeof answer.score === "number") {
      resultScore.textContent = "Score " + formatNumber(answer.score) + " (below 0 for an outlier)";
    }
    var timing = "answered in " + formatMs(elapsed);
    if (serverSeconds !== null && Number.isFinite(Number(serverSeconds))) {
      timing += " (" + formatMs(Number(serverSeconds) * 1000) + " in the service)";
    }
    resultMeta.textContent = "Model " + answer.model + " version " + answer.model_version + " · " + timing;
    resultMeta.dataset.modelVersion = answer.model_version;
    if (bars && answer.probabilities) {
      var predicted = typeof prediction === "string" ? prediction : JSON.stringify(prediction);
      bars.querySelectorAll(".bar").forEach(function (bar) {
        var probability = answer.probabilities[bar.dataset.class];
        var share = typeof probability === "number" ? probability : 0;
        bar.dataset.probability = String(share);
        bar.querySelector(".bar-fill").style.width = (share * 100).toFixed(2) + "%";
        bar.querySelector(".bar-value").textContent = percent(share);
        var isPredicted = bar.dataset.class === predicted;
        bar.classList.toggle("is-predicted", isPredicted);
        var name = bar.querySelector(".bar-name");
        name.textContent = bar.dataset.class + (isPredicted ? " ✓" : "");
      });
    }
  }

  function showProblem(problem, status) {
    clearErrors();
    settle("is-stale");
    var errors = errorsOf(problem);
    var unplaced = [];
    Object.keys(errors).forEach(function (name) {
      var field = fields.find(function (candidate) {
        return candidate.dataset.name === name;
      });
      if (field) {
        showFieldError(field, messages(errors[name]));
      } else {
        unplaced.push(keyed(name, messages(errors[name])));
      }
    });
    var placed = Object.keys(errors).length - unplaced.length;
    if (unplaced.length || !placed) {
      showText(formError, unplaced.length ? unplaced.join(" ") : (problem && problem.detail) || "Error " + status);
    }
    resultStatus.textContent =
      status === 422 && placed
        ? "Fix the highlighted " + plural(placed, "value") + " to predict again."
        : (problem && problem.title) || answeredText(status);
  }

  function showFailure(text) {
    settle("is-failed");
    resultStatus.textContent = text;
  }

  // --- Copy as curl ---------------------------------------------------------------

  copyButton.addEventListener("click", function () {
    var text = curlText.textContent;
    function copied() {
      copyStatus.textContent = "Copied.";
      window.setTimeout(function () {
        copyStatus.textContent = "";
      }, 2500);
    }
    function fallback() {
      // No clipboard API (a page served over plain HTTP from another host):
      // show the command selected, ready for Ctrl+C.
      var details = curlText.closest("details");
      details.open = true;
      var range = document.createRange();
      range.selectNodeContents(curlText);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (ignored) {
        ok = false;
      }
      copyStatus.textContent = ok ? "Copied." : "Selected: press Ctrl+C to copy.";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(copied, fallback);
    } else {
      fallback();
    }
  });

  // --- A whole file ---------------------------------------------------------------

  var downloadUrl = null;

  function csvField(value) {
    var text = String(value === null ? "" : value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function csvLine(values) {
    return values.map(csvField).join(",") + "\r\n";
  }

  function saveBlob(blob, filename) {
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(function () {
      URL.revokeObjectURL(url);
    }, 10000);
  }

  csvTemplate.addEventListener("click", function () {
    var row = currentRow();
    var names = Object.keys(row);
    var values = names.map(function (name) {
      return row[name];
    });
    saveBlob(new Blob([csvLine(names) + csvLine(values)], { type: "text/csv" }), modelName + "-template.csv");
  });

  /* A CSV reader fed in chunks (RFC 4180: quoted fields, doubled quotes, CRLF or LF). */
  function csvReader(onRow) {
    var field = "";
    var row = [];
    var quoted = false;
    var quoteSeen = false;
    var afterCR = false;
    function endField() {
      row.push(field);
      field = "";
    }
    function endRow() {
      endField();
      if (!(row.length === 1 && row[0] === "")) {
        onRow(row);
      }
      row = [];
    }
    return {
      push: function (text) {
        for (var i = 0; i < text.length; i++) {
          var c = text.charAt(i);
          if (quoted) {
            if (quoteSeen) {
              quoteSeen = false;
              if (c === '"') {
                field += '"';
                continue;
              }
              quoted = false; // the closing quote: read c as unquoted
            } else if (c === '"') {
              quoteSeen = true;
              continue;
            } else {
              field += c;
              continue;
            }
          }
          var wasCR = afterCR;
          afterCR = false;
          if (c === '"' && field === "") {
            quoted = true;
          } else if (c === ",") {
            endField();
          } else if (c === "\r") {
            endRow();
            afterCR = true;
          } else if (c === "\n") {
            if (!wasCR) {
              endRow();
            }
          } else {
            field += c;
          }
        }
      },
      end: function () {
        if (field !== "" || row.length) {
          endRow();
        }
      },
    };
  }

  /* Reads the predicted file once: its header, its row count, the first rows and the rows' errors. */
  function scanCsv(blob) {
    var summary = { header: null, errorColumn: -1, rows: 0, preview: [], errors: [], errorCount: 0 };
    var reader = csvReader(function (row) {
      if (summary.header === null) {
        summary.header = row;
        summary.errorColumn = row.lastIndexOf("error");
        return;
      }
      summary.rows += 1;
      if (summary.preview.length < PREVIEW_ROWS) {
        summary.preview.push({ number: summary.rows, cells: row });
      }
      var error = row[summary.errorColumn]; // no "error" column: row[-1] is undefined
      if (error) {
        summary.errorCount += 1;
        if (summary.errors.length < ERRORS_SHOWN) {
          summary.errors.push({ number: summary.rows, message: error });
        }
      }
    });
    var stream = blob.stream().pipeThrough(new TextDecoderStream());
    var chunks = stream.getReader();
    function next() {
      return chunks.read().then(function (step) {
        if (step.done) {
          reader.end();
          return summary;
        }
        reader.push(step.value);
        return next();
      });
    }
    return next();
  }

  function resetCsv() {
    csvStatus.textContent = "";
    csvDownload.hidden = true;
    csvErrors.hidden = true;
    csvErrorList.textContent = "";
    csvPreview.hidden = true;
    csvPreview.querySelector("thead tr").textContent = "";
    csvPreview.querySelector("tbody").textContent = "";
    if (downloadUrl) {
      URL.revokeObjectURL(downloadUrl);
      downloadUrl = null;
    }
  }

  /* Lists ITEMS ({where, message}) under "Rows with errors", and how many of TOTAL are left out. */
  function listErrors(items, total) {
    items.forEach(function (item) {
      var li = document.createElement("li");
      var where = document.createElement("strong");
      where.textContent = item.where + ": ";
      li.appendChild(where);
      li.appendChild(document.createTextNode(item.message));
      csvErrorList.appendChild(li);
    });
    if (total > items.length) {
      var more = document.createElement("li");
      more.textContent = "and " + (total - items.length) + " more.";
      csvErrorList.appendChild(more);
    }
    csvErrors.hidden = items.length === 0;
  }

  /* A row's error as listed: the service writes "line N: field: message"; the row number is ours. */
  function rowError(error) {
    var line = /^line (\d+): /.exec(error.message);
    return {
      where: "Row " + error.number + (line ? " (line " + line[1] + ")" : ""),
      message: line ? error.message.slice(line[0].length) : error.message,
    };
  }

  function filenameFrom(disposition) {
    var match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition || "");
    return match ? decodeURIComponent(match[1]) : null;
  }

  function isProbability(column) {
    return column.indexOf("probability_") === 0;
  }

  /* The columns the service adds to the file are drawn apart from the features. */
  function columnClass(column) {
    var added = column === "prediction" || column === "score" || column === "error";
    return added || column.indexOf("prediction_") === 0 || isProbability(column) ? "col-out" : "";
  }

  /* A table cell (TAG "td" or "th") showing TEXT as text. */
  function tableCell(tag, text, className) {
    var cell = document.createElement(tag);
    cell.textContent = text;
    if (className) {
      cell.className = className;
    }
    return cell;
  }

  /* A header cell for a column or a row (SCOPE "col" or "row"). */
  function headerCell(scope, text, className) {
    var cell = tableCell("th", text, className);
    cell.scope = scope;
    return cell;
  }

  function showPreview(summary) {
    var head = csvPreview.querySelector("thead tr");
    var body = csvPreview.querySelector("tbody");
    var classes = summary.header.map(columnClass);
    head.appendChild(headerCell("col", "Row"));
    summary.header.forEach(function (name, index) {
      head.appendChild(headerCell("col", name, classes[index]));
    });
    summary.preview.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.appendChild(headerCell("row", String(row.number)));
      row.cells.forEach(function (cell, index) {
        var name = summary.header[index] || "";
        var shown = isProbability(name) && isNumeric(cell) ? percent(Number(cell)) : cell;
        tr.appendChild(tableCell("td", shown, classes[index]));
      });
      if (row.cells[summary.errorColumn]) {
        tr.className = "row-error";
      }
      body.appendChild(tr);
    });
    csvPreview.querySelector("caption").textContent =
      summary.rows > summary.preview.length
        ? "The first " + summary.preview.length + " of " + summary.rows + " rows, with their predictions"
        : "All " + summary.rows + " rows, with their predictions";
    csvPreview.hidden = false;
  }

  /* The problem document of a failed answer, or null when it sent none. */
  function problemOf(response) {
    var type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
    return /json$/.test(type) ? response.json() : Promise.resolve(null);
  }

  function uploadCsv() {
    var file = csvFile.files[0];
    resetCsv();
    if (!file) {
      csvStatus.textContent = "Choose a CSV file first.";
      return;
    }
    csvStatus.textContent = "Predicting " + file.name + "…";
    var started = performance.now();
    // A browser sends the whole file before it reads the answer: ask for it after the upload.
    fetch(csvUrl + "?stream=false", postOptions("text/csv", file))
      .then(function (response) {
        if (!response.ok) {
          return problemOf(response).then(function (problem) {
            showCsvProblem(problem, response.status);
          });
        }
        return response.blob().then(function (blob) {
          var seconds = (performance.now() - started) / 1000;
          var filename =
            filenameFrom(response.headers.get("Content-Disposition")) ||
            file.name.replace(/\.csv$/i, "") + "-predictions.csv";
          return showCsvAnswer(blob, filename, seconds);
        });
      })
      .catch(function (error) {
        csvStatus.textContent = "The file could not be predicted: " + error.message;
      });
  }

  function showCsvAnswer(blob, filename, seconds) {
    downloadUrl = URL.createObjectURL(blob);
    csvDownload.href = downloadUrl;
    csvDownload.download = filename;
    return scanCsv(blob).then(function (summary) {
      if (!summary.header) {
        csvStatus.textContent = "The service answered with an empty file.";
        return;
      }
      csvDownload.textContent = "Download " + filename + " (" + summary.rows + " rows with predictions)";
      csvDownload.hidden = false;
      csvStatus.textContent =
        summary.rows +
        " " +
        plural(summary.rows, "row") +
        " predicted in " +
        seconds.toFixed(1) +
        " s" +
        (summary.errorCount ? "; " + summary.errorCount + " with errors." : ", none with errors.");
      listErrors(summary.errors.map(rowError), summary.errorCount);
      showPreview(summary);
    });
  }

  function showCsvProblem(problem, status) {
    csvStatus.textContent = (problem && problem.detail) || answeredText(status);
    var errors = errorsOf(problem);
    var keys = Object.keys(errors);
    listErrors(
      keys.slice(0, ERRORS_SHOWN).map(function (key) {
        // Keyed by line ("line 3"; the header is line 1), or "_body" for the file as a whole.
        var where = /^\d+$/.test(key) ? "Line " + key : isWhole(key) ? "File" : key;
        return { where: where.charAt(0).toUpperCase() + where.slice(1), message: messages(errors[key]) };
      }),
      keys.length
    );
  }

  csvForm.addEventListener("submit", function (event) {
    event.preventDefault();
    uploadCsv();
  });
  csvFile.addEventListener("change", function () {
    if (csvFile.files.length) {
      uploadCsv();
    }
  });

  // Show the prediction for the row the form opens with straight away.
  syncSliders();
  predict();
})();
