/* The H5 pages' behaviour: calls to the /v1 API, errors next to their fields, small widgets. */
(function () {
  "use strict";
  var openid = document.body.dataset.openid;

  function api(method, path, body) {
    var options = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (resp) {
      return resp.json().catch(function () { return { code: resp.status, err_msg: "服务暂时不可用，请稍后重试" }; });
    }, function () {
      return { code: -1, err_msg: "网络异常，请检查网络后重试" };
    });
  }

  function toast(text, then, failed) {
    var box = document.getElementById("toast");
    document.getElementById("toast-text").textContent = text;
    box.querySelector(".weui-icon_toast").className =
      (failed ? "weui-icon-warn" : "weui-icon-success-no-circle") + " weui-icon_toast";
    box.hidden = false;
    setTimeout(function () { box.hidden = true; if (then) { then(); } }, 1200);
  }

  // Which field an error message is about: "参数 phone …", "缺少参数 retinues[0].phone", or its meaning.
  var MEANINGS = [[/验证码/, "code"], [/未找到该员工/, "name"], [/已被其他微信绑定|手机号必须是本人/, "phone"],
                  [/被访员工/, "interviewee"]];
  function fieldOf(message) {
    var match = /参数 ([A-Za-z_]+)/.exec(message);
    if (match) { return match[1]; }
    for (var i = 0; i < MEANINGS.length; i++) {
      if (MEANINGS[i][0].test(message)) { return MEANINGS[i][1]; }
    }
    return null;
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error, .form-error").forEach(function (el) { el.hidden = true; });
    form.querySelectorAll(".weui-cell_warn").forEach(function (el) { el.classList.remove("weui-cell_warn"); });
  }

  function showError(form, message) {
    var field = fieldOf(message);
    var tip = field && form.querySelector('.field-error[data-for="' + field + '"]');
    if (tip) {
      var cell = form.querySelector('[data-field="' + field + '"]');
      var label = cell && cell.querySelector(".weui-label");
      var text = message.replace(/^(缺少)?参数 [^ ]+ ?/, "");
      if (/^缺少参数|不能为空/.test(message) && label) { text = "请填写" + label.textContent; }
      tip.textContent = text || message;
      tip.hidden = false;
      if (cell) { cell.classList.add("weui-cell_warn"); }
    } else {
      var top = form.querySelector(".form-error");
      top.textContent = message;
      top.hidden = false;
      top.scrollIntoView({ block: "center" });
    }
  }

  function submitting(form, busy) {
    var button = form.querySelector('button[type="submit"]');
    button.disabled = busy;
    button.classList.toggle("weui-btn_loading", busy);
  }

  function codeButton(form) {
    var button = form.querySelector("#send-code");
    if (!button) { return; }
    button.addEventListener("click", function () {
      clearErrors(form);
      var phone = form.phone.value.trim();
      if (!phone) { showError(form, "参数 phone 请先填写手机号"); return; }
      button.disabled = true;
      api("POST", "/v1/sms/code", { phone: phone }).then(function (res) {
        if (res.code !== 0) { button.disabled = false; showError(form, res.err_msg); return; }
        toast("验证码已发送");
        var left = 60;
        button.textContent = left + " 秒后重发";
        var timer = setInterval(function () {
          left -= 1;
          if (left <= 0) { clearInterval(timer); button.disabled = false; button.textContent = "重新获取"; }
          else { button.textContent = left + " 秒后重发"; }
        }, 1000);
      });
    });
  }

  function bindForm(form) {
    codeButton(form);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      clearErrors(form);
      var body = { weixinUserId: openid, phone: form.phone.value.trim() };
      if (form.name) { body.name = form.name.value.trim(); }
      if (form.code) { body.code = form.code.value.trim(); }
      submitting(form, true);
      api("POST", form.dataset.api, body).then(function (res) {
        submitting(form, false);
        if (res.code !== 0) { showError(form, res.err_msg); return; }
        toast("绑定成功", function () { location.href = "/h5/"; });
      });
    });
  }

  function applyForm(form) {
    var list = form.querySelector("#retinues");
    var row = document.getElementById("retinue-row");
    form.querySelector("#add-retinue").addEventListener("click", function () {
      if (list.children.length >= 20) { showError(form, "参数 retinues 最多 20 人"); return; }
      list.appendChild(row.content.cloneNode(true));
      list.lastElementChild.querySelector("input").focus();
    });
    list.addEventListener("click", function (event) {
      if (event.target.classList.contains("remove-retinue")) { event.target.closest(".retinue").remove(); }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      clearErrors(form);
      var own = form.dataset.ownPhone;
      var inviting = form.dataset.kind === "invite";
      var day = form.date.value;
      var body = {
        subject_type: 1,
        name: form.name.value.trim(),
        phone: form.phone.value.trim(),
        come_from: form.come_from.value.trim(),
        purpose: Number(form.purpose.value),
        start_time: day && form.start.value ? day + " " + form.start.value + ":00" : "",
        end_time: day && form.end.value ? day + " " + form.end.value + ":00" : "",
        proposer: own,
        interviewee: inviting ? form.dataset.ownName : form.interviewee.value.trim(),
        interviewee_phone: inviting ? own : form.interviewee_phone.value.trim(),
        retinues: Array.prototype.map.call(list.querySelectorAll(".retinue"), function (el) {
          return { name: el.querySelector('[name="retinue_name"]').value.trim(),
                   phone: el.querySelector('[name="retinue_phone"]').value.trim() };
        })
      };
      submitting(form, true);
      api("POST", "/v1/subject", body).then(function (res) {
        submitting(form, false);
        if (res.code !== 0) { showError(form, res.err_msg); return; }
        toast(inviting ? "邀请已发出" : "申请已提交", function () { location.href = "/h5/records/" + res.data.id; });
      });
    });
  }

  function loadMore(button, list) {
    if (!button) { return; }
    button.addEventListener("click", function () {
      var next = Number(button.dataset.next);
      button.disabled = true;
      var status = button.dataset.status ? "&status=" + encodeURIComponent(button.dataset.status) : "";
      fetch("/h5/records?more=1&page=" + next + status, { credentials: "same-origin" }).then(function (resp) {
        return resp.ok ? resp.text() : Promise.reject(resp.status);
      }).then(function (html) {
        list.insertAdjacentHTML("beforeend", html);
        button.dataset.next = next + 1;
        button.disabled = false;
        if (next >= Number(button.dataset.total)) { button.parentNode.remove(); }
      }, function () {
        button.disabled = false;
        toast("加载失败，请重试");
      });
    });
  }

  function setStatus(item, label) {
    var status = item.querySelector(".status");
    status.textContent = label;
    status.className = "status status-" + label;
  }

  // 同意来访 at once; 拒绝 through the sheet, with an optional reason the visitor is told.
  function approvals(items) {
    var sheet = byId("decline-sheet");
    var reason = byId("decline-reason");
    var error = byId("decline-error");
    var confirm = byId("decline-confirm");
    var current = null;

    function close() { sheet.hidden = true; current = null; }

    items.forEach(function (item) {
      var approve = item.querySelector(".authorize");
      var decline = item.querySelector(".decline");
      if (approve) {
        approve.addEventListener("click", function () {
          approve.disabled = true;
          api("PUT", "/v1/auth/" + item.dataset.id).then(function (res) {
            if (res.code !== 0) { approve.disabled = false; toast(res.err_msg, null, true); return; }
            setStatus(item, "已授权");
            approve.remove();
            toast("已同意");
          });
        });
      }
      if (decline) {
        decline.addEventListener("click", function () {
          current = item;
          reason.value = "";
          byId("decline-count").textContent = "0";
          byId("decline-who").textContent = item.dataset.name;
          error.hidden = true;
          confirm.disabled = false;
          sheet.hidden = false;
          reason.focus();
        });
      }
    });
    if (!sheet) { return; }
    reason.addEventListener("input", function () { byId("decline-count").textContent = reason.value.length; });
    byId("decline-cancel").addEventListener("click", close);
    byId("decline-mask").addEventListener("click", close);
    confirm.addEventListener("click", function () {
      var item = current;
      confirm.disabled = true;
      api("POST", "/v1/auth/" + item.dataset.id + "/decline", { reason: reason.value.trim() }).then(function (res) {
        confirm.disabled = false;
        if (res.code !== 0) { error.textContent = res.err_msg; error.hidden = false; return; }
        close();
        setStatus(item, "已拒绝");
        item.querySelector(".actions").remove();
        toast("已拒绝");
      });
    });
  }

  // 取消预约 on the record page, after a confirmation; the page then shows the visit cancelled.
  function cancelVisit(button) {
    var dialog = byId("confirm");
    var confirm = byId("confirm-cancel");
    button.addEventListener("click", function () { dialog.hidden = false; });
    byId("keep-visit").addEventListener("click", function () { dialog.hidden = true; });
    confirm.addEventListener("click", function () {
      confirm.disabled = true;
      api("POST", "/v1/visit/records/" + button.dataset.id + "/cancel").then(function (res) {
        dialog.hidden = true;
        confirm.disabled = false;
        if (res.code !== 0) { toast(res.err_msg, null, true); return; }
        toast("预约已取消", function () { location.reload(); });
      });
    });
  }

  function unbind(button) {
    var dialog = document.getElementById("confirm");
    button.addEventListener("click", function () { dialog.hidden = false; });
    document.getElementById("cancel").addEventListener("click", function () { dialog.hidden = true; });
    document.getElementById("confirm-unbind").addEventListener("click", function () {
      api("DELETE", "/v1/subject/binding/" + encodeURIComponent(openid)).then(function (res) {
        dialog.hidden = true;
        if (res.code !== 0) { toast(res.err_msg); return; }
        toast("已解除绑定", function () { location.href = "/h5/"; });
      });
    });
  }

  // Each page's widgets are found by their ids (no inline scripts: the CSP allows none).
  function byId(id) { return document.getElementById(id); }
  if (byId("bind-form")) { bindForm(byId("bind-form")); }
  if (byId("apply-form")) { applyForm(byId("apply-form")); }
  if (byId("records")) { loadMore(byId("more"), byId("records")); }
  if (byId("unbind")) { unbind(byId("unbind")); }
  if (byId("cancel-visit")) { cancelVisit(byId("cancel-visit")); }
  approvals(document.querySelectorAll(".approval"));
})();
